"""MLLMJudge / MultiTurnJudge logic against scripted backends: modes, failures, cache, partial batches."""

from __future__ import annotations

import pytest
from PIL import Image

from refine.errors import BackendError, ConfigError
from refine.registry import registry
from refine.rewards.backends.base import PartialBatchError, ProbResult
from refine.rewards.mllm import MLLMJudge, MultiTurnJudge, PartialRewardError
from refine.rewards.prompts import DEFAULT_REQUIREMENTS


class ScriptedVLM:
    """Answers from scripts keyed by the instruction found in the prompt; records every call."""

    name = "scripted"

    def __init__(self, texts=None, probs=None, fail_on=()):
        self.texts, self.probs, self.fail_on = texts or {}, probs or {}, set(fail_on)
        self.calls = []

    @staticmethod
    def instruction(conversation):
        text = conversation[-1]["content"][-1]["text"]
        return text.split("Instruction: ")[1].splitlines()[0] if "Instruction: " in text else text

    def _run(self, kind, conversations, answer, extra):
        self.calls.append((kind, [self.instruction(c) for c in conversations], extra))
        results = [None if self.instruction(c) in self.fail_on else answer(self.instruction(c)) for c in conversations]
        if any(self.instruction(c) in self.fail_on for c in conversations):
            raise PartialBatchError("http://127.0.0.1:9/v1 is unreachable after 4 attempts", results)
        return results

    def generate(self, conversations, max_new_tokens=128, temperature=0.0):
        return self._run("generate", conversations, lambda i: self.texts[i], {"max_new_tokens": max_new_tokens})

    def next_token_probs(self, conversations, candidates, prefill=""):
        return self._run("probs", conversations, lambda i: self.probs[i], {"candidates": list(candidates), "prefill": prefill})


def scene(seed: int) -> Image.Image:
    """A distinct flat 32x32 image per seed (these tests never look at pixels)."""
    return Image.new("RGB", (32, 32), (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256))


def batch(*instructions, metas=None):
    n = len(instructions)
    return [scene(i) for i in range(n)], [scene(i + 10) for i in range(n)], list(instructions), metas or [{} for _ in range(n)]


def test_score_logit_is_the_normalised_expected_value():
    probs = {"a": ProbResult({"0": 0.1, "1": 0.0, "2": 0.2, "3": 0.0, "4": 0.3, "5": 0.4}, mass=0.97),
             "b": ProbResult({"0": 1.0, "1": 0.0, "2": 0.0, "3": 0.0, "4": 0.0, "5": 0.0}, mass=0.02)}
    vlm = ScriptedVLM(probs=probs)
    judge = MLLMJudge(vlm, mode="score_logit", min_mass=0.05)
    out = judge(*batch("a", "b"))
    assert out.scores[0] == pytest.approx((0.2 * 2 + 0.3 * 4 + 0.4 * 5) / 5)
    assert out.details[0]["expected"] == pytest.approx(3.6) and out.details[0]["mass"] == 0.97
    assert out.scores[1] is None and out.details[1]["error"] == "low_candidate_mass"
    assert judge.failures == {"low_candidate_mass": 1}
    kind, _, extra = vlm.calls[0]
    assert kind == "probs" and extra == {"candidates": ["0", "1", "2", "3", "4", "5"], "prefill": ['"Score": [['] * 2}


def test_yesno_logit_reads_p_yes():
    vlm = ScriptedVLM(probs={"a": ProbResult({"Yes": 0.8, "No": 0.2}, mass=0.9)})
    out = MLLMJudge(vlm, mode="yesno_logit")(*batch("a"))
    assert out.scores == [0.8]
    assert vlm.calls[0][2] == {"candidates": ["Yes", "No"], "prefill": ['"Judgement": [[']}


def test_sampling_failures_are_none_with_raw_text_and_counted():
    texts = {"good": '"Score": [[3]]', "chatty": "I think it deserves a 4", "high": '"Score": [[9]]', "cot": '"Reasoning": "1 of 2", "Score": [[5]]'}
    judge = MLLMJudge(ScriptedVLM(texts=texts), mode="score_sample")
    out = judge(*batch("good", "chatty", "high", "cot"))
    assert out.scores == [0.6, None, None, 1.0]
    assert out.details[1] == {"mode": "score_sample", "raw": "I think it deserves a 4", "error": "unparseable", "cached": False}
    assert out.details[2]["error"] == "out_of_range" and out.details[2]["raw"] == '"Score": [[9]]'
    assert judge.failures == {"unparseable": 1, "out_of_range": 1}


def test_yesno_sample_parses_judgement():
    texts = {"y": '"Judgement": [[Yes]]', "n": "Judgement: no", "?": "perhaps"}
    out = MLLMJudge(ScriptedVLM(texts=texts), mode="yesno_sample")(*batch("y", "n", "?"))
    assert out.scores == [1.0, 0.0, None]


def test_cot_logit_reads_the_score_after_the_models_reasoning():
    reasoning = '"Reasoning": "the circle is blue now",\n"Score": [[4]]'
    vlm = ScriptedVLM(texts={"a": reasoning}, probs={"a": ProbResult({str(d): 1 / 6 for d in range(6)}, mass=0.5)})
    out = MLLMJudge(vlm, mode="score_logit_cot", max_new_tokens=64)(*batch("a"))
    assert [c[0] for c in vlm.calls] == ["generate", "probs"]
    assert vlm.calls[0][2] == {"max_new_tokens": 64}
    assert vlm.calls[1][2]["prefill"] == ['"Reasoning": "the circle is blue now",\n"Score": [[']
    assert out.scores == [pytest.approx(0.5)] and out.details[0]["reasoning"] == reasoning


def test_score_sample_cot_uses_the_cot_prompt():
    vlm = ScriptedVLM(texts={"a": '"Reasoning": "fine", "Score": [[2]]'})
    judge = MLLMJudge(vlm, mode="score_sample_cot")
    assert judge(*batch("a")).scores == [0.4]
    assert "Before that, analyze the image" in judge.user_text("a", {})
    assert judge.max_new_tokens == 256


def test_identical_requests_are_scored_once_per_run():
    vlm = ScriptedVLM(texts={"a": "[[1]]", "b": "[[2]]"})
    judge = MLLMJudge(vlm, mode="score_sample")
    src, out, _, _ = batch("a")
    first = judge([src[0], src[0], src[0]], [out[0], out[0], out[0]], ["a", "a", "b"], [{}, {}, {}])
    assert first.scores == [0.2, 0.2, 0.4] and vlm.calls[0][1] == ["a", "b"]  # duplicate sent once
    second = judge([src[0]], [out[0]], ["b"], [{}])
    assert second.scores == [0.4] and second.details[0]["cached"] and len(vlm.calls) == 1
    uncached = MLLMJudge(vlm, mode="score_sample", cache=False)
    uncached([src[0]], [out[0]], ["b"], [{}])
    assert len(vlm.calls) == 2


def test_task_type_picks_the_requirement_and_meta_can_override_it():
    vlm = ScriptedVLM(texts={"x": "[[5]]"})
    judge = MLLMJudge(vlm, mode="score_sample", cache=False)
    text = judge.user_text("x", {"task_type": "remove"})
    assert f"Requirements: {DEFAULT_REQUIREMENTS['remove']}" in text
    assert "Requirements: keep the cat" in judge.user_text("x", {"task": "add", "requirement": "keep the cat"})
    conversation = judge.conversation(scene(0), scene(1), text)
    assert [p["type"] for p in conversation[1]["content"]] == ["image", "image", "text"]
    assert conversation[0]["content"][0]["text"] == "You are a helpful assistant."


def test_partial_batch_keeps_scored_items_and_retries_only_the_rest():
    vlm = ScriptedVLM(texts={"a": "[[5]]", "b": "[[0]]", "c": "[[4]]"}, fail_on={"b"})
    judge = MLLMJudge(vlm, mode="score_sample")
    args = batch("a", "b", "c")
    with pytest.raises(PartialRewardError, match="127.0.0.1:9") as info:
        judge(*args)
    assert isinstance(info.value, BackendError)
    assert info.value.partial.scores == [1.0, None, 0.8]
    assert info.value.partial.details[1]["error"] == "backend_failed"
    vlm.fail_on.clear()  # the server is back
    assert judge(*args).scores == [1.0, 0.0, 0.8]
    assert vlm.calls[-1][1] == ["b"]


def test_judge_config_errors():
    with pytest.raises(ConfigError, match="score_logit"):
        MLLMJudge(ScriptedVLM(), mode="logit")
    with pytest.raises(ConfigError, match="score_range"):
        MLLMJudge(ScriptedVLM(), score_range=(0, 10))
    with pytest.raises(ConfigError, match="not a VLM backend"):
        MLLMJudge(object())


def test_registry_builds_a_judge_with_a_backend_spec():
    judge = registry.build("reward", {"kind": "mllm", "mode": "score_sample",
                                      "backend": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}})
    assert isinstance(judge, MLLMJudge) and judge.backend.name == "openai:http://127.0.0.1:9/v1"


def test_multi_turn_judge_scores_every_turn_from_one_query():
    answer = "<Thought> t1 ok, t2 partly </Thought> <Turn1Score>5</Turn1Score> <Turn2Score>3</Turn2Score>"
    vlm = ScriptedVLM(texts={})
    vlm.texts = {}
    vlm.generate = lambda conversations, max_new_tokens=128, temperature=0.0: (vlm.calls.append(conversations) or [answer] * len(conversations))
    judge = MultiTurnJudge(vlm, aggregate="min")
    meta = {"history": [{"instruction": "add a cat", "image": scene(1)}]}
    out = judge([scene(0)], [scene(2)], ["make it red"], [meta])
    assert out.details[0]["turn_scores"] == [1.0, 0.5] and out.scores == [0.5]
    (conversation,) = vlm.calls[0]
    parts = conversation[-1]["content"]
    assert [p["type"] for p in parts].count("image") == 3
    assert "Turn 1 instruction: add a cat" in parts[-1]["text"] and "Turn 2 instruction: make it red" in parts[-1]["text"]


def test_multi_turn_missing_turn_is_none_and_counted():
    vlm = ScriptedVLM()
    vlm.generate = lambda conversations, max_new_tokens=128, temperature=0.0: ["<Turn1Score>4</Turn1Score>"] * len(conversations)
    judge = MultiTurnJudge(vlm, thinking=False)
    out = judge.score_turns([scene(0)], [[scene(1), scene(2)]], [["a", "b"]])
    assert out.scores == [None] and out.details[0]["turn_scores"] == [0.75, None]
    assert "turn 2: unparseable" in out.details[0]["error"] and judge.failures == {"unparseable": 1}
    with pytest.raises(ConfigError, match="one per turn"):
        judge.score_turns([scene(0)], [[scene(1)]], [["a", "b"]])
