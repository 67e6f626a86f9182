"""The OpenAI-compatible backend against a real server: `transformers serve` running the tiny VLM.

The server is the transformers CLI (`transformers serve <folder>`) started as a subprocess on a
free 127.0.0.1 port, offline (`refine.testing.serve.transformers_serve`). It has no logprobs, so
the logit modes are checked for a clear error here and for parsing against vLLM-format responses
in test_openai_compatible.py.
"""

from __future__ import annotations

import pytest

from refine.errors import BackendError
from refine.rewards.backends.openai_compatible import OpenAICompatibleVLM
from refine.rewards.backends.transformers_vlm import TransformersVLM
from refine.rewards.mllm import MLLMJudge
from refine.testing.serve import transformers_serve

# Starting the server process dominates: ~10 s on an idle 2-core machine, up to a minute when busy.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tiny_vlm_path, tmp_path_factory):
    """(base_url, model name) of `transformers serve` running the tiny VLM; torn down after the module."""
    with transformers_serve(tiny_vlm_path, log_path=tmp_path_factory.mktemp("serve") / "server.log") as server:
        yield server


def conversations(make_scene):
    return [
        [{"role": "user", "content": [{"type": "image", "image": make_scene(1)}, {"type": "image", "image": make_scene(2)},
                                      {"type": "text", "text": "Score the edit 0-5."}]}],
        [{"role": "user", "content": [{"type": "image", "image": make_scene(3)}, {"type": "text", "text": "Yes or No?"}]}],
    ]


def test_server_generates_what_the_local_model_generates(served, tiny_vlm_path, make_scene):
    base_url, model = served
    remote = OpenAICompatibleVLM(base_url, model=model, timeout=60)
    local = TransformersVLM(tiny_vlm_path, batch_size=1)  # one at a time, like the server
    chats = conversations(make_scene)
    texts = remote.generate(chats, max_new_tokens=8, temperature=0.0)
    # Same greedy tokens; the server strips surrounding whitespace from the reply.
    assert texts == [t.strip() for t in local.generate(chats, max_new_tokens=8, temperature=0.0)]
    assert all(isinstance(t, str) and t for t in texts)


def test_score_sample_over_the_server_keeps_raw_text_of_unparseable_answers(served, tiny_vlm_path, make_scene):
    base_url, model = served
    judge = MLLMJudge(OpenAICompatibleVLM(base_url, model=model, timeout=60), mode="score_sample", max_new_tokens=8)
    local = MLLMJudge(TransformersVLM(tiny_vlm_path, batch_size=1), mode="score_sample", max_new_tokens=8)
    args = ([make_scene(4)], [make_scene(5)], ["make the circle blue"], [{"task_type": "recolor"}])
    out, expected = judge(*args), local(*args)
    assert out.details[0]["raw"] == expected.details[0]["raw"].strip()  # the server saw the same prompt and images
    assert out.scores == expected.scores
    # The random tiny model does not write "[[n]]": the item is None, with the raw answer kept and counted.
    assert out.scores == [None] and out.details[0]["error"] in ("unparseable", "out_of_range")
    assert sum(judge.failures.values()) == 1


def test_logit_mode_against_a_server_without_logprobs_is_a_clear_error(served, make_scene):
    base_url, model = served
    judge = MLLMJudge(OpenAICompatibleVLM(base_url, model=model, max_retries=0), mode="score_logit")
    with pytest.raises(BackendError, match=r"127\.0\.0\.1:\d+/v1/chat/completions .*--max-logprobs"):
        judge([make_scene(1)], [make_scene(2)], ["add a cat"], [{}])


def test_a_pool_of_two_servers_survives_one_going_down(served, tiny_vlm_path, make_scene, tmp_path):
    base_url, model = served
    local = TransformersVLM(tiny_vlm_path, batch_size=1)
    chats = conversations(make_scene) * 3
    expected = [t.strip() for t in local.generate(chats, max_new_tokens=6, temperature=0.0)]
    with transformers_serve(tiny_vlm_path, log_path=tmp_path / "second.log") as (second_url, _):
        pool = OpenAICompatibleVLM([base_url, second_url], model=model, timeout=60, max_concurrency=1, backoff=0.0,
                                   breaker_failures=1)
        assert pool.generate(chats, max_new_tokens=6) == expected
        sent = {s["url"]: s["sent"] for s in pool.pool.stats()}
        assert sent[base_url] > 0 and sent[second_url] > 0  # both servers did work
    # The second server is gone: the same batch still comes back whole and in order.
    assert pool.generate(chats, max_new_tokens=6) == expected
    second = next(s for s in pool.pool.stats() if s["url"] == second_url)
    assert second["failures"] >= 1 and second["state"] == "open"
    pool.close()
