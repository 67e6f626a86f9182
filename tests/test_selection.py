"""BestOfK: k seeds, the original instruction, the reward's pick; compute counted in editor calls."""

import pytest
from PIL import Image

from refine.editor import compose
from refine.errors import ConfigError
from refine.rewards import RewardOutput, ShapesOverall
from refine.selection import BestOfK
from refine.types import EditRequest, EditResult, Step


class SeedEditor:
    """Paints the image grey level 10 * seed and records every batch it was called with."""

    def __init__(self):
        self.batches = []

    def edit(self, requests):
        self.batches.append(list(requests))
        return [
            EditResult(Image.new("RGB", (4, 4), (10 * r.seed,) * 3), r.instruction, [Step("edit", "seed", r.instruction)])
            for r in requests
        ]


def prefers(level_by_request):
    """A reward scoring 1 for the output whose grey level a request wants, 0 otherwise (None when told)."""

    def reward(sources, outputs, instructions, metas):
        scores = []
        for output, meta in zip(outputs, metas):
            level = output.getpixel((0, 0))[0]
            wanted = level_by_request[meta["id"]]
            scores.append(None if wanted is None else float(level == wanted))
        return RewardOutput(scores)

    return reward


def request(id, seed=10, instruction="paint it"):
    return EditRequest(Image.new("RGB", (4, 4), "white"), instruction, seed=seed, meta={"id": id})


def test_picks_the_seed_the_reward_prefers_per_request_with_the_original_instruction():
    editor = SeedEditor()
    reward = prefers({"a": 120, "b": 100, "c": 110})  # seeds 12, 10 and 11 of 10..13
    results = compose(editor, BestOfK(reward, k=4)).edit([request("a"), request("b"), request("c")])
    assert [r.image.getpixel((0, 0))[0] for r in results] == [120, 100, 110]
    assert [r.meta["best_of_k"]["chosen"] for r in results] == [3, 1, 2]
    assert results[0].meta["best_of_k"]["seeds"] == [10, 11, 12, 13]
    assert all(r.instruction == "paint it" for batch in editor.batches for r in batch)
    assert [len(b) for b in editor.batches] == [3, 3, 3, 3]  # k batched calls, one per seed


def test_every_candidate_is_an_edit_step_then_one_rerank_step():
    [result] = compose(SeedEditor(), BestOfK(prefers({"a": 110}), k=3)).edit([request("a")])
    assert [s.kind for s in result.steps] == ["edit", "edit", "edit", "rerank"]
    assert [s.info["seed"] for s in result.steps[:3]] == [10, 11, 12]
    assert [s.scores for s in result.steps[:3]] == [{"reward": 0.0}, {"reward": 1.0}, {"reward": 0.0}]
    assert result.steps[-1].info == {"chosen": 2, "k": 3} and result.meta["best_of_k"]["editor_calls"] == 3


def test_best_of_one_is_the_plain_editor():
    plain = SeedEditor().edit([request("a", seed=7)])[0]
    [best] = compose(SeedEditor(), BestOfK(prefers({"a": 0}), k=1)).edit([request("a", seed=7)])
    assert best.image.tobytes() == plain.image.tobytes()


def test_unscorable_candidates_lose_and_ties_go_to_the_earliest():
    def scores(values):
        return lambda sources, outputs, instructions, metas: RewardOutput(list(values))

    [result] = compose(SeedEditor(), BestOfK(scores([None, 0.2, float("nan")]), k=3)).edit([request("a")])
    assert result.meta["best_of_k"]["chosen"] == 2
    [result] = compose(SeedEditor(), BestOfK(scores([0.5, 0.5, 0.1]), k=3)).edit([request("a")])
    assert result.meta["best_of_k"]["chosen"] == 1


def test_a_reward_spec_is_built_through_the_registry_and_sets_the_oracle_flag():
    assert BestOfK("shapes_overall", k=2).reads_ground_truth is True
    assert isinstance(BestOfK({"kind": "shapes_overall"}).reward, ShapesOverall)
    assert BestOfK(prefers({}), k=2).reads_ground_truth is False


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_k_must_be_a_whole_number_of_edits(k):
    with pytest.raises(ConfigError, match="k="):
        BestOfK(prefers({}), k=k)
