"""The Think-while-Edit loop on fake editors and thinkers: stop rules, selection, batching, steps."""

from dataclasses import replace

import pytest
from PIL import Image

from refine.editor import compose
from refine.errors import BackendError, ConfigError
from refine.thinker.loop import LoopConfig, ThinkWhileEdit
from refine.thinker.protocol import Thought
from refine.types import EditResult

RED, BLUE, GRAY = (255, 0, 0), (0, 0, 255), (128, 128, 128)


def run(editor, thinker, requests, **settings):
    return compose(editor, ThinkWhileEdit(thinker, **settings)).edit(requests)


def test_first_turn_uses_the_original_instruction_then_the_refined_one(editor, scripted, request_for):
    [result] = run(editor, scripted(), [request_for(script=["paint it red"])])
    assert [b[0].instruction for b in editor.batches] == ["make it look like a tomato", "paint it red"]
    assert result.image.getpixel((0, 0)) == RED and result.instruction == "paint it red"
    assert result.meta["thinker"]["stop_reason"] == "score_threshold"
    assert result.meta["thinker"]["editor_calls"] == 2 and result.meta["thinker"]["chosen_turn"] == 2


def test_every_later_turn_re_edits_the_source_image(editor, scripted, request_for):
    request = request_for(script=["paint it blue", "paint it red"])
    run(editor, scripted(), [request])
    assert len(editor.batches) == 3
    assert all(batch[0].image.getpixel((0, 0)) == (255, 255, 255) for batch in editor.batches)


def test_edit_from_current_chains_the_edits(editor, scripted, request_for):
    run(editor, scripted(), [request_for(script=["paint it blue", "paint it red"])], edit_from="current")
    assert [b[0].image.getpixel((0, 0)) for b in editor.batches] == [(255, 255, 255), GRAY, BLUE]


def test_expert_stop_flag_stops_even_without_a_score_threshold(editor, scripted, request_for):
    [result] = run(editor, scripted(stop_flag=True), [request_for()], score_threshold=None)
    assert result.meta["thinker"]["stop_reason"] == "thinker_stop" and len(editor.batches) == 2


def test_score_threshold_is_on_the_semantic_score(editor, scripted, request_for):
    # misses score 7: below the default 8, above 6
    [high] = run(editor, scripted(miss_score=7.0), [request_for(script=["paint it green"])])
    assert high.meta["thinker"]["stop_reason"] == "unchanged_instruction"
    [low] = run(editor, scripted(miss_score=7.0), [request_for(script=["paint it green"])], score_threshold=6.0)
    assert low.meta["thinker"]["stop_reason"] == "score_threshold" and low.meta["thinker"]["turns"] == 1


def test_quality_threshold_also_required_when_set(editor, scripted, request_for):
    [result] = run(editor, scripted(), [request_for(script=["paint it red"] * 5)], quality_threshold=9.5, stop_on_unchanged=False)
    assert result.meta["thinker"]["stop_reason"] == "max_turns" and result.meta["thinker"]["turns"] == 5


def test_unchanged_instruction_stops(editor, scripted, request_for):
    [result] = run(editor, scripted(), [request_for(script=["paint it blue", "paint it blue"])])
    assert result.meta["thinker"]["stop_reason"] == "unchanged_instruction"
    assert result.meta["thinker"]["instructions"] == ["make it look like a tomato", "paint it blue"]


@pytest.mark.parametrize("settings", [{"vary_seed": True}, {"edit_from": "current"}, {"stop_on_unchanged": False}])
def test_unchanged_instruction_goes_on_when_the_retry_is_a_new_attempt(editor, scripted, request_for, settings):
    [result] = run(editor, scripted(), [request_for(script=["paint it blue"])], max_turns=3, **settings)
    assert result.meta["thinker"]["stop_reason"] == "max_turns" and result.meta["thinker"]["editor_calls"] == 3


def test_max_turns_default_is_five(editor, scripted, request_for):
    script = ["paint it blue", "paint it green", "paint it blue.", "paint it green now", "paint it blue!!", "x"]
    [result] = run(editor, scripted(), [request_for(script=script)])
    # "paint it blue." differs from "paint it green" (the previous one), so the loop goes on to 5
    assert result.meta["thinker"] == {**result.meta["thinker"], "stop_reason": "max_turns", "turns": 5, "editor_calls": 5}
    assert LoopConfig().max_turns == 5


def test_no_early_stop_runs_exactly_max_turns(editor, scripted, request_for):
    [result] = run(editor, scripted(stop_flag=True), [request_for()], early_stop=False, max_turns=4)
    assert result.meta["thinker"]["editor_calls"] == 4 and result.meta["thinker"]["stop_reason"] == "max_turns"


def test_select_best_returns_the_best_scored_edit_and_last_returns_the_last(editor, scripted, request_for):
    script = ["paint it red", "paint it blue", "paint it green", "paint it blue"]
    [best] = run(editor, scripted(), [request_for(script=script)], early_stop=False, max_turns=4)
    assert best.image.getpixel((0, 0)) == RED and best.meta["thinker"]["chosen_turn"] == 2
    assert best.instruction == "paint it red"
    [last] = run(editor, scripted(), [request_for(script=script)], early_stop=False, max_turns=4, select="last")
    assert last.meta["thinker"]["chosen_turn"] == 4 and last.instruction == "paint it green"
    assert last.image.getpixel((0, 0)) == (0, 128, 0)  # the last turn's image, not the best one (red)


def test_ties_go_to_the_earliest_edit(editor, scripted, request_for):
    [result] = run(editor, scripted(), [request_for(script=["paint it blue", "paint it green"])], early_stop=False, max_turns=3)
    assert result.meta["thinker"]["chosen_turn"] == 1


def test_garbage_thinker_every_turn_returns_the_first_edit_and_says_why(editor, garbage, request_for):
    [result] = run(editor, garbage, [request_for()])
    assert len(editor.batches) == 1 and result.instruction == "make it look like a tomato"
    assert result.image.getpixel((0, 0)) == GRAY
    summary = result.meta["thinker"]
    assert summary["stop_reason"] == "thinker_failed" and summary["thinker_calls"] == 2  # one retry
    think = [s for s in result.steps if s.kind == "think"][-1]
    assert think.info["error"].startswith("no EditThinker tags") and think.info["stop_reason"] == "thinker_failed"


def test_thinker_retry_recovers_a_bad_answer(editor, request_for):
    class Flaky:
        name = "flaky"
        calls = 0

        def think(self, requests):
            self.calls += 1
            if self.calls == 1:
                return [Thought(error="garbage") for _ in requests]
            return [Thought("paint it red", scores={"semantic": 1.0}) for _ in requests]

    [result] = run(editor, Flaky(), [request_for()], max_turns=2)
    assert [b[0].instruction for b in editor.batches] == ["make it look like a tomato", "paint it red"]
    assert result.meta["thinker"]["stop_reason"] == "max_turns" and result.meta["thinker"]["thinker_calls"] == 3
    [result] = run(editor, Flaky(), [request_for()], thinker_retries=0)
    assert result.meta["thinker"]["stop_reason"] == "thinker_failed"


def test_requests_are_batched_per_turn(editor, scripted, request_for):
    requests = [
        request_for(instruction="paint it red", script=["paint it red"]),  # right at turn 1
        request_for(script=["paint it red"]),  # right at turn 2
        request_for(script=["paint it blue", "paint it red"]),  # right at turn 3
    ]
    thinker = scripted()
    results = run(editor, thinker, requests)
    assert [len(b) for b in editor.batches] == [3, 2, 1]
    assert [len(b) for b in thinker.batches] == [3, 2, 1]
    assert [r.meta["thinker"]["turns"] for r in results] == [1, 2, 3]
    assert all(r.image.getpixel((0, 0)) == RED for r in results)


def test_steps_record_every_turn(editor, scripted, request_for):
    [result] = run(editor, scripted(), [request_for(script=["paint it blue", "paint it red"])])
    assert [(s.kind, s.info["turn"]) for s in result.steps] == [("edit", 1), ("think", 1), ("edit", 2), ("think", 2), ("edit", 3), ("think", 3)]
    edit1, think1 = result.steps[0], result.steps[1]
    assert edit1.instruction == "make it look like a tomato" and edit1.image.getpixel((0, 0)) == GRAY
    assert edit1.scores == {"semantic": 2.0, "quality": 9.0} and edit1.seconds >= 0
    assert edit1.info["editor_steps"][0]["source"] == "color" and edit1.info["seed"] == 7
    assert think1.instruction == "paint it blue" and think1.reasoning == "turn 1: wrong colour" and think1.source == "scripted"
    assert result.steps[-1].info["stop_reason"] == "score_threshold"


def test_seeds_are_kept_or_varied_per_turn(editor, scripted, request_for):
    run(editor, scripted(), [request_for(script=["paint it blue", "paint it red"])])
    assert [b[0].seed for b in editor.batches] == [7, 7, 7]
    editor.batches.clear()
    run(editor, scripted(), [request_for(script=["paint it blue", "paint it red"])], vary_seed=True)
    assert [b[0].seed for b in editor.batches] == [7, 8, 9]


def test_think_before_edit_rewrites_first(editor, scripted, request_for):
    thinker = scripted()
    [result] = run(editor, thinker, [request_for()], think_before_edit=True)
    assert editor.batches[0][0].instruction == "paint it red"
    assert thinker.batches[0][0].edited is None and thinker.batches[0][0].turn == 0
    assert result.steps[0].kind == "think" and result.steps[0].info["turn"] == 0
    assert result.meta["thinker"]["editor_calls"] == 1


class SureOf:
    """Wraps a thinker: every thought's confidence is `confidence` (None: not measured)."""

    def __init__(self, thinker, confidence):
        self.thinker, self.confidence, self.name = thinker, confidence, "sure-of"

    def think(self, requests):
        return [replace(t, confidence=self.confidence) for t in self.thinker.think(requests)]


@pytest.mark.parametrize("confidence, instructions, reason", [
    (0.4, ["make it look like a tomato"], "low_confidence"),
    (0.9, ["make it look like a tomato", "paint it red"], "score_threshold"),
])
def test_min_confidence_uses_only_rewrites_the_thinker_is_sure_of(editor, scripted, request_for, confidence, instructions, reason):
    [result] = run(editor, SureOf(scripted(), confidence), [request_for()], min_confidence=0.5)
    assert result.meta["thinker"]["instructions"] == instructions and result.meta["thinker"]["stop_reason"] == reason
    assert result.meta["thinker"]["confidences"][0] == confidence


def test_min_confidence_before_the_first_edit_keeps_the_original(editor, scripted, request_for):
    run(editor, SureOf(scripted(), 0.4), [request_for()], min_confidence=0.5, think_before_edit=True, max_turns=1)
    assert editor.batches[0][0].instruction == "make it look like a tomato"
    run(editor, SureOf(scripted(), 0.6), [request_for()], min_confidence=0.5, think_before_edit=True, max_turns=1)
    assert editor.batches[1][0].instruction == "paint it red"


def test_min_confidence_without_early_stop_repeats_the_current_instruction(editor, scripted, request_for):
    [result] = run(editor, SureOf(scripted(), 0.1), [request_for()], min_confidence=0.5, early_stop=False, max_turns=3)
    assert result.meta["thinker"]["instructions"] == ["make it look like a tomato"] * 3


def test_min_confidence_needs_a_thinker_that_measures_it(editor, scripted, request_for):
    with pytest.raises(ConfigError, match="min_confidence=0.5 needs a thinker that reports its confidence"):
        run(editor, SureOf(scripted(), None), [request_for()], min_confidence=0.5)


def test_last_turn_is_critiqued_only_when_asked(editor, scripted, request_for):
    thinker = scripted()
    [result] = run(editor, thinker, [request_for(script=["paint it blue"] * 3)], max_turns=1, select="last", critique_last_turn=False)
    assert thinker.batches == [] and result.meta["thinker"]["stop_reason"] == "max_turns"


def test_observers_see_each_turn_then_the_result(editor, scripted, request_for):
    class Recorder:
        def __init__(self):
            self.events = []

        def on_turn(self, event):
            self.events.append(("turn", event.index, event.turn, event.stop_reason))

        def on_finish(self, index, request, result):
            self.events.append(("finish", index, result.meta["thinker"]["turns"], None))

    recorder = Recorder()
    requests = [request_for(instruction="paint it red"), request_for()]
    compose(editor, ThinkWhileEdit(scripted(), observers=[recorder])).edit(requests)
    assert recorder.events == [
        ("turn", 0, 1, "score_threshold"),
        ("turn", 1, 1, None),
        ("turn", 1, 2, "score_threshold"),
        ("finish", 0, 1, None),
        ("finish", 1, 2, None),
    ]


def test_editor_returning_the_wrong_count_is_a_backend_error(scripted, request_for):
    class Lossy:
        def edit(self, requests):
            return []

    with pytest.raises(BackendError, match="returned 0 results for 1 requests"):
        run(Lossy(), scripted(), [request_for()])


def test_empty_batch(editor, scripted):
    assert run(editor, scripted(), []) == []


def test_refiner_is_black_box_and_composes_after_any_editor(editor, scripted):
    refiner = ThinkWhileEdit(scripted())
    assert (refiner.name, refiner.needs_white_box, refiner.returns_white_box) == ("thinker", False, False)

    class WhiteBox:
        name = "lora"
        needs_white_box = True

        def __call__(self, editor):
            return editor

    with pytest.raises(ConfigError, match="needs a white-box flow editor"):
        compose(editor, refiner, WhiteBox())


def test_settings_are_validated():
    class T:
        name = "t"

        def think(self, requests):
            return []

    with pytest.raises(ConfigError, match="max_turns"):
        ThinkWhileEdit(T(), max_turns=0)
    with pytest.raises(ConfigError, match="unknown key 'max_turn'"):
        ThinkWhileEdit(T(), max_turn=3)
    with pytest.raises(ConfigError, match="either a LoopConfig or keyword"):
        ThinkWhileEdit(T(), LoopConfig(), max_turns=2)


def test_result_meta_keeps_the_editor_meta(scripted, request_for):
    class MetaEditor:
        def edit(self, requests):
            return [EditResult(Image.new("RGB", (8, 8), (255, 0, 0)), r.instruction, meta={"nfe": 8}) for r in requests]

    [result] = run(MetaEditor(), scripted(), [request_for()])
    assert result.meta["nfe"] == 8 and "thinker" in result.meta
