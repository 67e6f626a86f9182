"""Loop traces: the JSONL + PNG layout the SFT/RL data pipelines read back."""

import json

import pytest
from PIL import Image

from refine.editor import compose
from refine.errors import ArtifactError
from refine.thinker.format import parse_thinker_output
from refine.thinker.loop import ThinkWhileEdit
from refine.thinker.traces import TraceWriter, json_safe_meta, read_requests, read_turns


def traced_run(tmp_path, editor, thinker, requests, **settings):
    with TraceWriter(tmp_path / "trace") as trace:
        results = compose(editor, ThinkWhileEdit(thinker, observers=[trace], **settings)).edit(requests)
    return results, tmp_path / "trace"


def test_one_record_per_turn_with_inputs_and_outputs(tmp_path, editor, scripted, request_for):
    requests = [request_for(script=["paint it blue", "paint it red"]), request_for(instruction="paint it red")]
    results, root = traced_run(tmp_path, editor, scripted(), requests)
    turns = read_turns(root)
    assert [(t.request_id, t.turn) for t in turns] == [("000000", 1), ("000000", 2), ("000000", 3), ("000001", 1)]
    first, second, last = turns[:3]
    assert first.instruction == "make it look like a tomato" and first.previous_instruction == "make it look like a tomato"
    assert first.output["instruction"] == "paint it blue" and second.previous_instruction == "paint it blue"
    assert first.output["semantic"] == 2.0 and first.output["quality"] == 9.0
    # images: the source once, then each turn's edit; next_image links a sample to its outcome
    assert Image.open(root / first.source_image).getpixel((0, 0)) == (255, 255, 255)
    assert Image.open(root / first.edited_image).getpixel((0, 0)) == (128, 128, 128)
    assert first.next_image == second.edited_image and Image.open(root / second.edited_image).getpixel((0, 0)) == (0, 0, 255)
    assert last.next_image is None and last.stop_reason == "score_threshold" and first.stop_reason is None
    assert first.seed == 7 and set(first.seconds) == {"edit", "think"} and first.thinker == "scripted"
    assert first.meta == {"want": "paint it red", "script": ["paint it blue", "paint it red"]}


def test_text_is_the_sft_target_in_the_canonical_format(tmp_path, editor, scripted, request_for):
    _, root = traced_run(tmp_path, editor, scripted(), [request_for()])
    record = read_turns(root)[0]
    parsed = parse_thinker_output(record.text)
    assert parsed.ok and parsed.repairs == []
    assert parsed.output.answer == record.output["instruction"] and parsed.output.semantic == record.output["semantic"]
    assert record.text == "<think>turn 1: wrong colour</think><score>[2, 9]</score><answer>paint it red</answer>"


def test_requests_file_summarises_each_trajectory(tmp_path, editor, scripted, request_for):
    script = ["paint it blue", "paint it red", "paint it green"]
    results, root = traced_run(tmp_path, editor, scripted(), [request_for(script=script)], early_stop=False, max_turns=4)
    [summary] = read_requests(root)
    assert summary["chosen_turn"] == 3 and summary["stop_reason"] == "max_turns" and summary["editor_calls"] == 4
    assert [t["scores"]["semantic"] for t in summary["turns"]] == [2.0, 2.0, 10.0, 2.0]
    assert summary["final_image"] == summary["turns"][2]["image"] == "images/000000/turn_3.png"
    assert summary["final_instruction"] == results[0].instruction == "paint it red"


def test_failed_thinker_turns_are_kept_with_their_error(tmp_path, editor, garbage, request_for):
    _, root = traced_run(tmp_path, editor, garbage, [request_for()])
    [record] = read_turns(root)
    assert not record.ok and record.text is None and record.error.startswith("no EditThinker tags")
    assert record.raw is not None and record.stop_reason == "thinker_failed"


def test_think_before_edit_turn_zero_has_no_edited_image(tmp_path, editor, scripted, request_for):
    _, root = traced_run(tmp_path, editor, scripted(), [request_for()], think_before_edit=True)
    turns = read_turns(root)
    assert turns[0].turn == 0 and turns[0].edited_image is None and turns[0].next_image == turns[1].edited_image


def test_appending_to_an_existing_trace_continues_the_ids(tmp_path, editor, scripted, request_for):
    traced_run(tmp_path, editor, scripted(), [request_for(instruction="paint it red")])
    traced_run(tmp_path, editor, scripted(), [request_for(instruction="paint it red")])
    root = tmp_path / "trace"
    assert [r["request_id"] for r in read_requests(root)] == ["000000", "000001"]
    assert json.loads((root / "manifest.json").read_text()) == {"format": "refine.thinker.trace", "version": 1}


def test_reading_a_missing_or_corrupt_trace_is_an_artifact_error(tmp_path):
    with pytest.raises(ArtifactError, match="no such trace file"):
        read_turns(tmp_path)
    (tmp_path / "turns.jsonl").write_text('{"request_id": \n')
    with pytest.raises(ArtifactError, match="turns.jsonl:1: not valid JSON"):
        read_turns(tmp_path)


def test_meta_is_made_json_safe():
    class WithJson:
        def to_json(self):
            return {"kind": "move"}

    meta = {"a": 1, "nested": {"b": [1, 2]}, "case": WithJson(), "image": Image.new("RGB", (2, 2))}
    assert json_safe_meta(meta) == {"a": 1, "nested": {"b": [1, 2]}, "case": {"kind": "move"}, "_dropped": ["image"]}
