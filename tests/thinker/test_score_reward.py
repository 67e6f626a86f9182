"""ThinkerScore: a thinker's semantic score as a reward, what the compute-matched best-of-k picks with."""

from refine.oracle import reads_ground_truth
from refine.registry import registry
from refine.selection import BestOfK
from refine.shapes.data import load_split
from refine.thinker.protocol import Thought
from refine.thinker.score_reward import ThinkerScore
from refine.types import EditResult


def test_expert_scores_the_target_above_the_source_and_is_an_oracle():
    case = load_split("shapes-val")[0]
    request = case.to_request()
    reward = registry.build("reward", {"kind": "thinker_score", "thinker": "expert"})
    out = reward([request.image] * 2, [case.target_image, case.source_image], [request.instruction] * 2, [request.meta] * 2)
    assert out.scores[0] == 1.0 and out.scores[1] < 0.5
    assert reward.reads_ground_truth
    assert reads_ground_truth("reward", {"kind": "thinker_score", "thinker": "expert"})
    assert not reads_ground_truth("reward", {"kind": "thinker_score", "thinker": "vlm:/models/EditThinker-8B"})
    assert not reads_ground_truth("refiner", {"kind": "best_of_k", "k": 2, "reward": {"kind": "thinker_score", "thinker": "vlm:x"}})


class _ScoresBySeed:
    """Reads the seed an edit was made with (its first pixel): seed 1 scores 9, seed 0 scores 2, seed 2 gets no reply."""

    name = "by-seed"

    def __init__(self):
        self.requests = []

    def think(self, requests):
        self.requests += requests
        replies = {0: Thought(instruction="x", scores={"semantic": 2.0}), 1: Thought(instruction="x", scores={"semantic": 9.0}),
                   2: Thought(error="no reply")}
        return [replies[r.edited.getpixel((0, 0))[0]] for r in requests]


class _SeedPainter:
    """An editor whose output encodes the request's seed in its first pixel."""

    def edit(self, requests):
        from PIL import Image

        return [EditResult(Image.new("RGB", (4, 4), (r.seed, 0, 0)), r.instruction) for r in requests]


def test_best_of_k_keeps_the_edit_the_thinker_scores_best_and_unscored_edits_lose():
    from PIL import Image

    from refine.types import EditRequest

    thinker = _ScoresBySeed()
    refined = BestOfK(ThinkerScore(thinker), k=3)(_SeedPainter())
    [result] = refined.edit([EditRequest(Image.new("RGB", (4, 4)), "make it red", seed=0)])
    assert result.image.getpixel((0, 0))[0] == 1                       # seed 1: semantic 9 beats 2 and the failed reply
    assert [s.scores for s in result.steps if s.kind == "edit"] == [{"thinker_score": 0.2}, {"thinker_score": 0.9}, {}]
    assert all(r.previous_instruction == r.instruction == "make it red" for r in thinker.requests)
