"""Per-turn rewards: ShapeEdit's exact judge, the one-query multi-turn MLLM judge, per-turn rewards against the original."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from refine.errors import BackendError, ConfigError
from refine.multiturn.data import sequence_request
from refine.multiturn.rewards import TurnRewards
from refine.rewards.base import RewardOutput
from refine.rewards.mllm import MultiTurnJudge
from refine.shapes.data import load_split

NAN = float("nan")


@pytest.fixture(scope="module")
def sequence():
    return load_split("shapes-mt-val")[3]


def _call(rewards, request, images):
    return rewards([request.image], [images], [request.instructions], [request.metas], [request.meta])


def test_shapes_judge_scores_each_turn_and_cc_against_the_original(sequence):
    request = sequence_request(sequence)
    rewards = TurnRewards({"kind": "shapes"}, {"kind": "shapes"}, {"kind": "shapes"})
    images = list(sequence.target_images)
    images[1] = images[0]  # turn 2 did nothing; turn 3 then applied its edit to the right scene
    scored = _call(rewards, request, images)
    if_row = scored.rewards["if"][0].tolist()
    assert if_row[0] == 1.0 and if_row[1] < 1.0
    assert scored.success[0].tolist() == [1.0, 0.0, 0.0]  # all-or-nothing from the failed turn on
    assert scored.rewards["quality"].shape == (1, 3) and scored.failed == 0
    # returning the ORIGINAL at every turn is perfectly consistent with it, and follows nothing
    nothing = _call(rewards, request, [request.image] * 3)
    assert nothing.rewards["cc"][0].tolist() == [1.0, 1.0, 1.0]
    assert max(nothing.rewards["if"][0].tolist()) < 1.0


def test_binary_scale_buckets_the_exact_if_and_scale_flips_the_sign(sequence):
    request = sequence_request(sequence)
    images = list(sequence.target_images)
    images[1] = images[0]
    graded = _call(TurnRewards({"kind": "shapes"}, {"kind": "shapes"}), request, images).rewards["if"][0].tolist()
    binary = _call(TurnRewards({"kind": "shapes"}, {"kind": "shapes"}, if_scale="binary"), request, images).rewards["if"][0].tolist()
    assert graded[1] < 1.0
    assert binary == [1.0 if v >= 1.0 else 0.0 for v in graded] and binary[1] == 0.0
    flipped = _call(TurnRewards({"kind": "shapes"}, {"kind": "shapes"}, scale=-1), request, images)
    assert flipped.rewards["if"][0].tolist() == [-v for v in graded]


class _FakeVLM:
    name = "fake"

    def __init__(self, reply):
        self.reply, self.seen = reply, []

    def generate(self, conversations, max_new_tokens=128, temperature=0.0):
        self.seen.extend(conversations)
        if isinstance(self.reply, Exception):
            raise self.reply
        return [self.reply] * len(conversations)

    def next_token_probs(self, *args, **kwargs):
        raise NotImplementedError


@pytest.mark.parametrize("thinking", [True, False])
def test_multiturn_judge_is_called_once_per_trajectory_with_the_whole_history(thinking, sequence):
    request = sequence_request(sequence)
    vlm = _FakeVLM("<Turn1Score>5</Turn1Score> <Turn2Score>3</Turn2Score> <Turn3Score>1</Turn3Score>")
    judge = MultiTurnJudge(vlm, thinking=thinking, cache=False)
    consistency = lambda s, o, i, m: RewardOutput([1.0] * len(o))
    trajectories = [sequence.target_images, sequence.target_images[::-1]]
    scored = TurnRewards(judge, consistency)([request.image] * 2, trajectories, [request.instructions] * 2, [request.metas] * 2)
    assert scored.rewards["if"].tolist() == [[1.0, 0.5, 0.0]] * 2
    assert len(vlm.seen) == 2  # one query per trajectory, every turn's image in it
    images = [part for part in vlm.seen[0][-1]["content"] if part["type"] == "image"]
    assert len(images) == 4  # the original + three turns
    assert ("<Thought>" in vlm.seen[0][-1]["content"][-1]["text"]) == thinking
    binary = TurnRewards(judge, consistency, if_scale="binary", binary_threshold=0.75)
    assert binary([request.image], [sequence.target_images], [request.instructions], [request.metas]).rewards["if"].tolist() == [[1.0, 0.0, 0.0]]


def test_a_failing_judge_gives_nan_turns_not_an_exception(sequence):
    request = sequence_request(sequence)
    judge = MultiTurnJudge(_FakeVLM(BackendError("server down")), cache=False)
    scored = TurnRewards(judge, lambda s, o, i, m: RewardOutput([0.5] * len(o)))(
        [request.image], [sequence.target_images], [request.instructions], [request.metas]
    )
    assert all(math.isnan(v) for v in scored.rewards["if"][0].tolist())
    assert scored.rewards["cc"][0].tolist() == [0.5] * 3
    assert scored.failed == 3 and "server down" in scored.errors[0]
    assert scored.success.tolist() == [[0.0, 0.0, 0.0]]


def test_per_turn_rewards_see_the_original_for_cc_and_the_previous_turn_for_if():
    original = Image.new("RGB", (8, 8), "white")
    turn_images = [Image.new("RGB", (8, 8), c) for c in ("red", "green", "blue")]
    seen = {}

    def recorder(slot):
        def reward(sources, outputs, instructions, metas):
            seen[slot] = [np.asarray(s)[0, 0].tolist() for s in sources]
            return RewardOutput([0.25] * len(outputs))

        return reward

    TurnRewards(recorder("if"), recorder("cc"))([original], [turn_images], [["a", "b", "c"]], [[{}, {}, {}]])
    assert seen["cc"] == [[255, 255, 255]] * 3
    assert seen["if"] == [[255, 255, 255], [255, 0, 0], [0, 128, 0]]


def test_bad_specs_are_refused():
    with pytest.raises(ConfigError, match="needs a 'kind'"):
        TurnRewards({}, {"kind": "shapes"})
    with pytest.raises(ConfigError, match="reward.if only"):
        TurnRewards({"kind": "shapes"}, {"kind": "mllm_multiturn", "backend": {"kind": "openai", "model": "m"}})
    with pytest.raises(ConfigError, match="if_scale"):
        TurnRewards({"kind": "shapes"}, {"kind": "shapes"}, if_scale="ternary")
