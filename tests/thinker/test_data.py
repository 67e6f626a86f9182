"""The data pipeline: traces -> trajectories -> scores -> samples -> TRL rows, and one end-to-end build."""

import json

import pytest
from datasets import load_from_disk
from PIL import Image
from typer.testing import CliRunner

from refine.cli import app, main
from refine.editor import compose
from refine.shapes.data import case_key, reserved_case_keys, stream_case
from refine.shapes.judge import judge_meta
from refine.thinker.data import ThinkerDataConfig, select
from refine.thinker.filters import Sample
from refine.thinker.format import parse_thinker_output
from refine.thinker.loop import ThinkWhileEdit
from refine.thinker.protocol import ThinkRequest
from refine.thinker.traces import TraceWriter
from refine.thinker.trajectories import fill_scores, load_trajectories
from refine.thinker.trl_rows import sample_row, samples_to_dataset
from refine.thinker.vlm import VLMThinker

RED = (255, 0, 0)


class RedScorer:
    """10 for a red edit, 1 otherwise (quality 9): a scorer that needs no ground truth."""

    name = "red"

    def score(self, items):
        return [{"semantic": 10.0 if edited.getpixel((0, 0)) == RED else 1.0, "quality": 9.0} for _, edited, _, _ in items]


def test_trajectories_read_back_from_a_loop_trace(tmp_path, editor, scripted, request_for):
    # request 0: gray (P_1 = T_s), blue (P_2), red (P_3), the expert stops; request 1: red at once
    requests = [request_for(script=["paint it blue", "paint it red"]), request_for(instruction="paint it red")]
    with TraceWriter(tmp_path / "trace") as trace:
        compose(editor, ThinkWhileEdit(scripted(stop_flag=True), observers=[trace], score_threshold=None, vary_seed=True)).edit(requests)
    trajectories = fill_scores(load_trajectories(tmp_path / "trace", editor="color"), RedScorer())
    first, second = trajectories
    assert first.id == "color/000000" and first.instruction == "make it look like a tomato" and first.editor == "color"
    assert [s.instruction for s in first.steps] == ["make it look like a tomato", "paint it blue", "paint it red"]
    assert [s.critique.answer for s in first.steps] == ["paint it blue", "paint it red", "paint it red"]
    assert [s.critique.stop for s in first.steps] == [False, False, True] and first.stopped
    assert [s.seed for s in first.steps] == [7, 8, 9]  # vary_seed: seed + t - 1
    assert first.scores() == [1.0, 1.0, 10.0] and first.image(first.steps[2].image).getpixel((0, 0)) == RED
    assert second.scores() == [10.0] and second.stopped and first.task == "unknown"
    chosen = select(trajectories, ThinkerDataConfig(output_dir=str(tmp_path / "out"), variance_threshold=100.0, balance_cap="none"))
    samples = chosen["splits"]["sft"]["samples"]
    assert [(s.trajectory_id, s.step, s.semantic, s.answer, s.terminal) for s in samples] == [
        ("color/000000", 1, 1.0, "paint it blue", False),
        ("color/000000", 2, 1.0, "paint it red", False),
        ("color/000000", 3, 10.0, "paint it red", True),
        ("color/000001", 1, 10.0, "paint it red", True),
    ]
    # every sample shows the image whose score it carries
    for s in samples:
        assert RedScorer().score([(None, first.image(s.image), "", {})])[0]["semantic"] == s.semantic


def _sample(**changes):
    red, gray = Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "gray")
    fields = dict(trajectory_id="e/000003", step=2, task="recolor", source=red, image=gray, instruction="paint it like the sky",
                  previous_instruction="make the red circle blue", reasoning="the circle is gray, not blue", semantic=3.1623,
                  quality=8.94, answer="make the red circle blue", next_scores={"semantic": 10.0, "quality": 9.0},
                  meta={"case_id": "train-31-3"})
    fields.update(changes)
    return Sample(**fields)


def test_row_is_trl_conversational_and_its_target_parses_back_exactly():
    row = sample_row(_sample())
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert row["prompt"][1]["content"][:2] == [{"type": "image", "text": None}, {"type": "image", "text": None}]
    assert row["images"][0].getpixel((0, 0)) == RED and row["images"][1].getpixel((0, 0)) == (128, 128, 128)
    text = row["completion"][0]["content"][0]["text"]
    parsed = parse_thinker_output(text)
    assert parsed.ok and parsed.repairs == []
    assert (parsed.output.semantic, parsed.output.quality, parsed.output.answer) == (3.2, 8.9, "make the red circle blue")
    assert parsed.output.reasoning == "the circle is gray, not blue" and parsed.output.stop is None
    assert (row["semantic"], row["next_semantic"], row["previous_instruction"]) == (3.1623, 10.0, "make the red circle blue")
    assert json.loads(row["meta"]) == {"case_id": "train-31-3"}


@pytest.mark.parametrize("prompts", ["thinker", "thinker-brief"])
def test_training_rows_and_inference_render_the_same_text(tiny_vlm_path, prompts):
    from transformers import AutoProcessor

    from refine.thinker.prompts import get_prompts

    processor = AutoProcessor.from_pretrained(tiny_vlm_path)
    sample = _sample()
    row = sample_row(sample, get_prompts(prompts))

    class Unused:
        name = "unused"

        def generate(self, *args, **kwargs):
            raise AssertionError("not called")

    inference = VLMThinker(Unused(), prompts=prompts).conversation(
        ThinkRequest(sample.source, sample.image, sample.instruction, sample.previous_instruction))
    rendered = processor.apply_chat_template(inference, tokenize=False, add_generation_prompt=True)
    assert processor.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True) == rendered
    assert sample.instruction in rendered and sample.previous_instruction in rendered
    if prompts == "thinker-brief":  # the small model's prompt ends on the user's instruction, next to the answer
        assert row["prompt"][1]["content"][2]["text"].endswith(f"Original instruction: {sample.instruction}")


def test_dataset_round_trips_through_disk(tmp_path):
    dataset = samples_to_dataset([_sample(), _sample(step=3, terminal=True, next_scores=None)])
    dataset.save_to_disk(str(tmp_path / "d"))
    loaded = load_from_disk(str(tmp_path / "d"))
    assert len(loaded) == 2 and loaded[1]["terminal"] and loaded[1]["next_semantic"] != loaded[1]["next_semantic"]  # NaN
    assert loaded[0]["images"][1].size == (32, 32) and loaded[0]["prompt"] == sample_row(_sample())["prompt"]


def test_build_without_traces_is_one_line_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["thinker", "data", "--config", "thinker_data/shapes", "--stage", "build", f"output_dir={tmp_path / 'none'}"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "run the generate stage first" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow(minutes=1)
def test_end_to_end_small_dataset_from_stream_cases(tmp_path):
    """Expert + the bundled editor at 2 and 4 steps on 4 stream cases, through the CLI."""
    out = tmp_path / "data"
    result = CliRunner().invoke(app, [
        "thinker", "data", "--config", "thinker_data/shapes", f"output_dir={out}", "cases=4", "progress=false",
        'editors=[{"name": "fast-4", "steps": 4}, {"name": "fast-2", "steps": 2, "guidance": 1.0}]',
        "balance_cap=none", "variance_threshold=4.0",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trajectories"] == 8 and summary["kept"] + summary["discarded"] == 8
    dataset = load_from_disk(str(out / "dataset"))
    counts = {name: part["samples"] for name, part in summary["splits"].items()}
    assert {name: len(split) for name, split in dataset.items()} == {name: n for name, n in counts.items() if n}
    assert sum(counts.values()) > 0
    reserved = reserved_case_keys()
    for split in dataset.values():
        for row in split:
            meta = json.loads(row["meta"])
            assert case_key(stream_case(31, int(meta["case_id"].rsplit("-", 1)[1]), indirect_fraction=0.5)) not in reserved
            # the score in the target is the judge's score of the image shown (the second image)
            assert judge_meta(meta, row["images"][1]).overall_10 == pytest.approx(row["semantic"], abs=1e-3)
            parsed = parse_thinker_output(row["completion"][0]["content"][0]["text"])
            assert parsed.ok and parsed.output.semantic == round(row["semantic"], 1)
            assert row["previous_instruction"] in row["prompt"][1]["content"][2]["text"]



def test_candidates_preset_teaches_the_rewrite_first_on_every_row(tmp_path):
    """thinker_data/shapes-candidates: the expert on outputs of known quality, everything to SFT, brief prompt."""
    from refine.shapes.data import ShapeCase

    out = tmp_path / "data"
    result = CliRunner().invoke(app, ["thinker", "data", "--config", "thinker_data/shapes-candidates", f"output_dir={out}",
                                      "cases=24", "progress=false", "balance_cap=none"])
    assert result.exit_code == 0, result.output
    dataset = load_from_disk(str(out / "dataset"))
    assert list(dataset) == ["sft"] and len(dataset["sft"]) >= 20
    for row in dataset["sft"]:
        case = ShapeCase.from_dict(json.loads(row["meta"])["shapes_case"])
        completion = row["completion"][0]["content"][0]["text"]
        # the brief critique opens with the request in direct words: the rewrite, on every row
        assert completion.startswith(f"<think>the request: {case.direct_instruction}\n")
        assert row["prompt"][1]["content"][2]["text"].endswith(f"Original instruction: {case.instruction}")
        assert judge_meta(json.loads(row["meta"]), row["images"][1]).overall_10 == pytest.approx(row["semantic"], abs=1e-3)
    scores = set(dataset["sft"]["semantic"])
    assert {0.0, 10.0} <= scores and any(0 < s < 10 for s in scores)   # failures, near misses and finished edits

def test_an_empty_split_keeps_the_schema():
    empty = samples_to_dataset([])
    assert len(empty) == 0 and empty.features == samples_to_dataset([_sample()]).features


def test_generate_continues_a_trace_only_under_the_same_plan(tmp_path):
    from refine.errors import ConfigError
    from refine.thinker.data import generate

    editors = [{"name": "target", "factory": "refine.thinker.data:TargetEditor"}]
    config = ThinkerDataConfig(output_dir=str(tmp_path), cases=2, progress=False, editors=editors)
    assert generate(config) == {"target": 2}
    lines = (tmp_path / "traces" / "target" / "requests.jsonl").read_text()
    assert generate(config) == {"target": 2}  # complete: nothing is run again
    assert (tmp_path / "traces" / "target" / "requests.jsonl").read_text() == lines
    with pytest.raises(ConfigError, match="other cases, seeds or editor settings"):
        generate(config.model_copy(update={"cases": 3}))


class RedoEditor:
    """Leaves the source unchanged unless the instruction starts with "redo:", then returns the exact target."""

    name = "redo"

    def edit(self, requests):
        from refine.shapes.data import ShapeCase
        from refine.types import EditResult

        out = []
        for r in requests:
            case = ShapeCase.from_dict(r.meta["shapes_case"])
            out.append(EditResult(case.target_image if r.instruction.startswith("redo:") else case.source_image, r.instruction))
        return out


def _stop_style_expert(body):
    """An OpenAI-compatible expert in the paper's stop-flag format: asks for a redo once, then says stop."""
    text = body["messages"][-1]["content"][-1]["text"]
    original = text.split("Original instruction (what the user wants): ")[1].split("\n")[0]
    previous = text.split("Instruction used in the last round (what produced Image 2): ")[1].split("\n")[0]
    reply = (f"<think>nothing changed</think><stop>no</stop><answer>redo: {original}</answer>" if previous == original
             else "<think>the edit is right</think><stop>yes</stop><answer></answer>")
    return 200, {"object": "chat.completion", "model": "expert",
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}]}


def test_an_openai_compatible_expert_with_a_stop_flag_makes_the_data(tmp_path, monkeypatch):
    from refine.testing.stub_openai import FakeServer
    from refine.thinker import data as data_module

    monkeypatch.setattr(data_module, "build_editor", lambda spec: RedoEditor())
    server = FakeServer(_stop_style_expert)
    try:
        config = ThinkerDataConfig(output_dir=str(tmp_path), cases=2, progress=False, thinker=f"vlm:{server.base_url}#expert",
                                   api_key_env=None, editors=[{"name": "redo"}], variance_threshold=30.0, balance_cap="none")
        assert data_module.generate(config) == {"redo": 2}
        summary = data_module.build(config)
    finally:
        server.close()
    # per trajectory: S = [0 (the source back), 10 (the target)], kept, best edit 2 where the expert stopped
    assert (summary["trajectories"], summary["kept"], summary["splits"]["sft"]["samples"], summary["splits"]["sft"]["terminal"]) == (2, 2, 4, 2)
    rows = load_from_disk(str(tmp_path / "dataset"))["sft"]
    assert [(r["step"], r["semantic"], r["terminal"]) for r in rows] == [(1, 0.0, False), (2, 10.0, True)] * 2
    assert all(r["answer"] == "redo: " + r["instruction"] for r in rows)  # a bare stop keeps the instruction that made the edit
    assert [parse_thinker_output(r["completion"][0]["content"][0]["text"]).output.semantic for r in rows] == [0.0, 10.0] * 2
