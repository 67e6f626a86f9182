"""ShapeEdit's judge as rewards: perfect edits score 1, no-ops fail IF, other data is not applicable."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

from refine.errors import ConfigError
from refine.registry import registry
from refine.rewards.base import CompositeReward
from refine.rewards.shapes_judge import ShapesCC, ShapesIF, ShapesOverall, ShapesPQ, judge_cached
from refine.shapes.data import load_split
from refine.shapes.judge import judge_meta


@pytest.fixture(scope="module")
def cases():
    return load_split("shapes-bench")[:6]


def test_each_reward_reads_its_metric_of_the_judge(cases):
    requests = [c.to_request() for c in cases]
    outputs = [c.source_image for c in cases]  # an editor that does nothing
    args = ([r.image for r in requests], outputs, [r.instruction for r in requests], [r.meta for r in requests])
    for reward, attr in ((ShapesIF(), "if_"), (ShapesCC(), "cc"), (ShapesPQ(), "pq"), (ShapesOverall(), "overall")):
        expected = [getattr(judge_meta(r.meta, o), attr) for r, o in zip(requests, outputs)]
        assert reward(*args).scores == pytest.approx(expected)
    assert ShapesIF()(*args).scores == [0.0] * len(cases)  # nothing done: no instruction followed


def test_perfect_edits_score_one_with_breakdown(cases):
    requests = [c.to_request() for c in cases]
    out = ShapesOverall()([r.image for r in requests], [c.target_image for c in cases],
                          [r.instruction for r in requests], [r.meta for r in requests])
    assert out.scores == [1.0] * len(cases)
    assert set(out.details[0]) == {"if", "cc", "pq", "overall", "breakdown"} and out.details[0]["breakdown"]


def test_items_without_a_shapes_case_are_not_applicable(cases):
    request = cases[0].to_request()
    blank = Image.new("RGB", (32, 32))
    out = ShapesIF()([blank, request.image], [blank, cases[0].target_image], ["x", request.instruction], [{}, request.meta])
    assert out.scores == [None, 1.0] and "shapes_case" in out.details[0]["error"]


def test_composite_of_if_and_cc_parses_each_output_once(cases, monkeypatch):
    import refine.shapes.judge as judge_module

    calls = []
    original = judge_module.judge_meta
    monkeypatch.setattr(judge_module, "judge_meta", lambda meta, image: calls.append(1) or original(meta, image))
    case = cases[3]
    request = case.to_request()
    shifted = case.target_image.rotate(90)  # an output no earlier test judged
    reward = registry.build("reward", {"kind": "composite", "rewards": {"if": "shapes_if", "cc": "shapes_cc"},
                                       "weights": {"if": 0.7, "cc": 0.3}})
    out = reward([request.image], [shifted], [request.instruction], [request.meta])
    assert len(calls) == 1
    expected = judge_cached(request.meta, shifted)
    assert out.scores[0] == pytest.approx(0.7 * expected["if"] + 0.3 * expected["cc"])
    assert isinstance(reward, CompositeReward)


def test_unknown_metric_is_a_config_error():
    with pytest.raises(ConfigError, match="metric"):
        ShapesIF(metric="fun")


def test_rewards_that_cannot_be_won_by_changing_less(cases):
    from refine.rewards.shapes_judge import ShapesGatedIF

    requests = [c.to_request() for c in cases]
    args = lambda outputs: ([r.image for r in requests], outputs, [r.instruction for r in requests], [r.meta for r in requests])  # noqa: E731
    noop, perfect = args([c.source_image for c in cases]), args([c.target_image for c in cases])
    mean_if_cc = CompositeReward({"if": ShapesIF(), "cc": ShapesCC()})
    assert mean_if_cc(*noop).scores == pytest.approx([0.5] * len(cases))  # the old preset's reward pays for doing nothing
    for reward in (ShapesOverall(), ShapesGatedIF(gate=0.8), registry.build("reward", {"kind": "shapes_gated_if"})):
        assert reward(*noop).scores == [0.0] * len(cases)
        assert reward(*perfect).scores == pytest.approx([1.0] * len(cases))
    # Gated: IF scaled by CC / gate below the gate, from the judge's own numbers.
    # The target with its left half wiped to the background: right edits, lost content.
    wiped = []
    for c in cases:
        image = c.target_image.convert("RGB")
        ImageDraw.Draw(image).rectangle([0, 0, image.width // 2, image.height], fill=image.getpixel((0, 0)))
        wiped.append(image)
    judged = [judge_meta(r.meta, o) for r, o in zip(requests, wiped)]
    assert any(j.if_ > 0 and j.cc < 0.8 for j in judged)  # the gate bites on some case
    expected = [j.if_ * min(1.0, j.cc / 0.8) for j in judged]
    assert ShapesGatedIF(gate=0.8)(*args(wiped)).scores == pytest.approx(expected)
    with pytest.raises(ConfigError, match="gate"):
        ShapesGatedIF(gate=0)
