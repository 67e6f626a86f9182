"""JudgedThinker: a rewrite-only model's rewrite plus a rewards-layer judge's score make a thinker for the whole loop."""

import pytest
from PIL import Image

from refine.config import validate_config
from refine.editor import compose
from refine.errors import ConfigError
from refine.rewards.backends.base import ProbResult
from refine.rewards.mllm import MLLMJudge
from refine.shapes.data import ShapeCase, stream_case
from refine.thinker.config import ThinkerConfig, build_thinker, refiner_from_config
from refine.thinker.judged import JudgedThinker
from refine.thinker.protocol import ThinkRequest
from refine.thinker.vlm import VLMThinker
from refine.types import EditResult


class Canned:
    """A VLM backend whose rewrite and score are set by the test; it counts its calls."""

    name = "canned"

    def __init__(self, rewrite="make the circle blue", probs=None):
        self.rewrite, self.probs, self.generated = rewrite, probs, 0

    def generate(self, conversations, max_new_tokens=128, temperature=0.0):
        self.generated += len(conversations)
        return [self.rewrite] * len(conversations)

    def next_token_probs(self, conversations, candidates, prefill=""):
        probs = self.probs or {"0": 0.0, "1": 0.0, "2": 1.0, "3": 0.0, "4": 0.0, "5": 0.0}
        return [ProbResult(probs, mass=1.0 if self.probs != {} else 0.0) for _ in conversations]


def thinker_on(backend, **judge):
    return JudgedThinker(VLMThinker(backend, prompts="shapes-rewrite"), MLLMJudge(backend, mode="score_logit", **judge))


def test_a_critique_scores_the_edit_against_the_users_instruction_and_proposes_the_rewrite_computed_once():
    backend = Canned()
    thinker = thinker_on(backend)
    source, edited = Image.new("RGB", (32, 32)), Image.new("RGB", (32, 32), "blue")
    before = thinker.think([ThinkRequest(source, None, "paint it like the sky", "paint it like the sky", 0)])[0]
    after = [thinker.think([ThinkRequest(source, edited, "paint it like the sky", previous, turn)])[0]
             for turn, previous in ((1, "paint it like the sky"), (2, "make the circle blue"))]
    assert before.instruction == "make the circle blue" and before.scores == {}
    assert [t.scores for t in after] == [{"semantic": 4.0}] * 2  # 2 of 5 -> 4 of 10
    assert [t.instruction for t in after] == ["make the circle blue"] * 2
    assert backend.generated == 1  # the rewrite depends on (source, instruction) only


def test_no_score_is_a_failed_thought_and_no_rewrite_keeps_the_instruction():
    source = Image.new("RGB", (32, 32))
    unscored = thinker_on(Canned(probs={}), min_mass=0.5).think([ThinkRequest(source, source, "add a cat", "add a cat")])[0]
    assert not unscored.ok and "no score" in unscored.error
    unwritten = thinker_on(Canned(rewrite="")).think([ThinkRequest(source, source, "add a cat", "add a red cat", 2)])[0]
    assert unwritten.ok and unwritten.instruction == "add a red cat"


@pytest.mark.parametrize("settings, message", [
    ({"thinker": "expert", "judge_mode": "score_logit"}, "use thinker='vlm:SPEC'"),
    ({"thinker": "vlm:/m", "judge_model": "/j"}, "set judge_mode too"),
    ({"thinker": "vlm:/m", "judge_mode": "score_magic"}, "judge_mode"),
    ({"thinker": "vlm:/m", "prompt": "shapes-rewrite", "max_turns": 3}, "or give it a judge"),
])
def test_config_rejects_a_judge_it_cannot_use(settings, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(ThinkerConfig, settings)


def test_config_builds_one_model_that_rewrites_and_judges_shared_by_loops_that_differ_only_in_their_settings():
    config = ThinkerConfig(thinker="vlm:refine/assets/shapes-vlm", prompt="shapes-rewrite-find", judge_mode="score_logit_cot",
                           max_turns=3, vary_seed=True)
    thinker = build_thinker(config)
    assert isinstance(thinker, JudgedThinker) and thinker.judge.backend is thinker.rewriter.backend
    assert thinker.judge.mode == "score_logit_cot" and thinker.reads_ground_truth is False
    # `select: last` and best-of-k rows of one compare run reuse its judge's score cache and rewrites
    assert build_thinker(config.model_copy(update={"select": "last", "max_turns": 2})) is thinker
    assert build_thinker(config.model_copy(update={"judge_against": "rewrite"})) is not thinker


class DirectOnly:
    """An editor that does a case's edit only when told it in the direct phrasing, and otherwise changes nothing."""

    def edit(self, requests):
        out = []
        for request in requests:
            case = ShapeCase.from_dict(request.meta["shapes_case"])
            out.append(EditResult(case.target_image if request.instruction == case.direct_instruction else request.image,
                                  request.instruction))
        return out


def test_the_bundled_models_run_think_while_edit_and_keep_the_rewrites_edit():
    """EditThinker's loop with learned parts only: turn 1 edits the user's words (this editor then changes nothing),
    the judge scores it against the thinker's rewrite, turn 2 edits the rewrite, and the best-scored edit is kept.
    Without the judge's score the loop could not tell the done edit from the untouched one (half would be kept)."""
    cases = [stream_case(77, i, indirect_fraction=1.0) for i in range(6)]
    config = ThinkerConfig(thinker="vlm:refine/assets/shapes-thinker-find", prompt="shapes-rewrite-find", max_new_tokens=128,
                           judge_mode="score_logit_cot", judge_model="refine/assets/shapes-vlm", judge_against="rewrite",
                           max_turns=2, score_threshold=None)
    results = compose(DirectOnly(), refiner_from_config(config)).edit([case.to_request(seed=0) for case in cases])
    done = [result.image.tobytes() == case.target_image.tobytes() for case, result in zip(cases, results)]
    assert sum(done) >= 5, [(case.instruction, result.instruction) for case, result in zip(cases, results)]
    assert all(result.meta["thinker"]["editor_calls"] == 2 for result in results)
