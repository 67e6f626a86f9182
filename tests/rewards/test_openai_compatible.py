"""The OpenAI-compatible backend against local fake servers answering in vLLM's documented format."""

from __future__ import annotations

import math
import socket
import time

import pytest
from PIL import Image

from refine.errors import BackendError
from refine.rewards.backends.base import PartialBatchError
from refine.rewards.backends.openai_compatible import OpenAICompatibleVLM, probs_from_response
from refine.rewards.mllm import MLLMJudge, PartialRewardError

IMAGE = Image.new("RGB", (8, 8), "red")


def chat(text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image", "image": IMAGE}, {"type": "text", "text": text}]}]


def completion(content: str) -> dict:
    return {"id": "x", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}


def test_score_logprobs_are_renormalised_over_the_score_tokens(fake_server, vllm_response):
    data = vllm_response("vllm_score_logprobs.json")
    server = fake_server(lambda body: (200, data))
    vlm = OpenAICompatibleVLM(server.base_url, model="m")
    (result,) = vlm.next_token_probs([chat("rate it")], [str(d) for d in range(6)], prefill='"Score": [[')

    raw = {"0": math.exp(-6.0), "1": math.exp(-5.0), "2": math.exp(-3.5), "3": math.exp(-1.5),
           "4": math.exp(-0.4) + math.exp(-4.0), "5": math.exp(-2.0)}  # " 4" counts for "4"
    mass = sum(raw.values())
    assert result.mass == pytest.approx(mass)
    assert result.probs == pytest.approx({k: v / mass for k, v in raw.items()})

    body = server.bodies[0]
    assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["max_tokens"] == 1
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["messages"][-1] == {"role": "assistant", "content": '"Score": [['}
    image_part = body["messages"][0]["content"][0]
    assert image_part["type"] == "image_url" and image_part["image_url"]["url"].startswith("data:image/png;base64,")


def test_yesno_judge_over_http(fake_server, vllm_response):
    server = fake_server(lambda body: (200, vllm_response("vllm_yesno_logprobs.json")))
    judge = MLLMJudge(OpenAICompatibleVLM(server.base_url, model="m"), mode="yesno_logit")
    out = judge([IMAGE], [IMAGE], ["make it red"], [{}])
    yes, no = math.exp(-0.3), math.exp(-1.4)  # "yes" (lower case) is another token
    assert out.scores[0] == pytest.approx(yes / (yes + no))
    assert out.details[0]["mass"] == pytest.approx(yes + no)


def test_missing_logprobs_and_refused_requests_say_what_to_change(fake_server, vllm_response):
    with pytest.raises(BackendError, match="returned no logprobs.*--max-logprobs"):
        probs_from_response(vllm_response("no_logprobs.json"), ["Yes", "No"], "http://127.0.0.1:1/v1/chat/completions")
    server = fake_server(lambda body: (400, vllm_response("vllm_max_logprobs_error.json")))
    vlm = OpenAICompatibleVLM(server.base_url, model="m", max_retries=2, backoff=0.0)
    with pytest.raises(BackendError, match=r"HTTP 400: Requested sample logprobs of 30.*--max-logprobs"):
        vlm.next_token_probs([chat("x")], ["Yes", "No"], "[[")
    assert len(server.bodies) == 1  # a 4xx is not retried


def test_server_down_retries_then_names_the_url():
    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    vlm = OpenAICompatibleVLM(url, model="m", max_retries=2, backoff=0.01, timeout=2)
    with pytest.raises(BackendError, match=rf"127\.0\.0\.1:{port}/v1/chat/completions is unreachable after 3 attempts"):
        vlm.generate([chat("x")], max_new_tokens=4)
    assert vlm.requests_sent == 3


def test_transient_errors_are_retried_with_backoff(fake_server):
    answers = iter([(503, {"error": {"message": "loading"}}), (429, {"error": "slow down"}), (200, completion("[[3]]"))])
    server = fake_server(lambda body: next(answers))
    vlm = OpenAICompatibleVLM(server.base_url, model="m", max_retries=3, backoff=0.05)
    start = time.perf_counter()
    assert vlm.generate([chat("x")]) == ["[[3]]"]
    assert len(server.bodies) == 3 and time.perf_counter() - start >= 0.05 + 0.1


def test_partial_batch_keeps_finished_items(fake_server):
    def respond(body):
        text = body["messages"][-1]["content"][-1]["text"]
        return (503, {"error": "down"}) if text == "Instruction: b" else (200, completion(f"[[{len(text) % 6}]]"))

    server = fake_server(respond)
    vlm = OpenAICompatibleVLM(server.base_url, model="m", max_concurrency=1, max_retries=1, backoff=0.0)
    with pytest.raises(PartialBatchError) as info:
        vlm.generate([chat("Instruction: a"), chat("Instruction: b"), chat("Instruction: c")])
    assert info.value.results[0] == "[[2]]" and info.value.results[1] is None
    assert server.base_url + "/chat/completions" in str(info.value)

    judge = MLLMJudge(vlm, mode="score_sample", prompts={"score": "Instruction: {instruction}", "system": None})
    with pytest.raises(PartialRewardError) as info:
        judge([IMAGE] * 2, [IMAGE] * 2, ["a", "b"], [{}, {}])
    assert info.value.partial.scores == [pytest.approx(2 / 5), None]


def test_concurrency_is_bounded(fake_server):
    server = fake_server(lambda body: (200, completion("[[1]]")), delay=0.05)
    vlm = OpenAICompatibleVLM(server.base_url, model="m", max_concurrency=3)
    assert vlm.generate([chat(str(i)) for i in range(9)]) == ["[[1]]"] * 9
    assert 1 < server.max_in_flight <= 3


def test_model_name_is_asked_from_the_server(fake_server):
    server = fake_server(lambda body: (200, completion("ok")))
    vlm = OpenAICompatibleVLM(server.base_url)
    assert vlm.generate([chat("x")]) == ["ok"] and server.bodies[0]["model"] == "served-model"
    server.models = []
    with pytest.raises(BackendError, match="lists no model"):
        OpenAICompatibleVLM(server.base_url).model


def test_generate_scored_reads_each_tokens_logprob(fake_server):
    tokens = [("make", -0.01), (" it", -0.2), (" blue", -1.2)]
    data = completion("make it blue")
    data["choices"][0]["logprobs"] = {"content": [{"token": t, "logprob": lp, "top_logprobs": []} for t, lp in tokens]}
    server = fake_server(lambda body: (200, data))
    (reply,) = OpenAICompatibleVLM(server.base_url, model="m").generate_scored([chat("rewrite it")], max_new_tokens=16)
    assert reply.text == "make it blue" and reply.pieces == ["make", " it", " blue"]
    assert reply.probs == pytest.approx([math.exp(lp) for _, lp in tokens])
    assert reply.min_prob(5, 7) == pytest.approx(math.exp(-0.2))  # the characters of "it"
    assert server.bodies[0]["logprobs"] is True and server.bodies[0]["max_tokens"] == 16


def test_generate_scored_without_logprobs_says_so(fake_server):
    server = fake_server(lambda body: (200, completion("make it blue")))
    with pytest.raises(BackendError, match="no logprobs"):
        OpenAICompatibleVLM(server.base_url, model="m").generate_scored([chat("rewrite it")])
