"""The ShapeEdit VLM behind a plain `transformers serve` (no refine code in the server) judges as the local model does."""

from __future__ import annotations

import pytest
import torch

from refine._compat import ensure_torchvision_importable

ensure_torchvision_importable()  # transformers' processors import torchvision; see refine/_compat.py

from transformers import AutoModelForImageTextToText  # noqa: E402

from refine.rewards.backends.openai_compatible import OpenAICompatibleVLM  # noqa: E402
from refine.rewards.backends.transformers_vlm import TransformersVLM  # noqa: E402
from refine.rewards.mllm import MLLMJudge  # noqa: E402
from refine.shapes.data import load_split  # noqa: E402
from refine.shapes.vlm.model import VLMSize, build_shapes_vlm  # noqa: E402
from refine.testing.serve import transformers_serve  # noqa: E402

# Starting the server process dominates: ~10 s on an idle 2-core machine, up to a minute when busy.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    """A tiny ShapeEdit VLM whose greedy answer depends on the prompt.

    Freshly initialised, its residual stream is the last token's (tied) embedding, so it answers
    "\\n" forever whatever it is asked; residual branches 10x stronger make the answer follow the
    prompt, so equal answers below mean equal prompts.
    """
    folder = build_shapes_vlm(tmp_path_factory.mktemp("vlm"), VLMSize.tiny())
    model = AutoModelForImageTextToText.from_pretrained(folder)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if ".layers." in name and name.endswith(("o_proj.weight", "down_proj.weight")):
                weight.mul_(10.0)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def served(vlm_dir, tmp_path_factory):
    with transformers_serve(vlm_dir, log_path=tmp_path_factory.mktemp("serve") / "server.log") as server:
        yield server


def test_the_server_sees_the_prompt_and_gives_the_answer_of_the_local_model(served, vlm_dir):
    base_url, model = served
    cases = load_split("shapes-val")[:4]
    args = ([c.source_image for c in cases], [c.target_image for c in cases], [c.instruction for c in cases],
            [c.to_request().meta for c in cases])
    remote = MLLMJudge(OpenAICompatibleVLM(base_url, model=model, timeout=120), mode="score_sample", max_new_tokens=8)(*args)
    local = MLLMJudge(TransformersVLM(vlm_dir, batch_size=1), mode="score_sample", max_new_tokens=8)(*args)
    texts = [d["raw"].strip() for d in local.details]  # the server strips surrounding whitespace
    assert len(set(texts)) > 1  # answers that follow the prompt: equal answers are not a coincidence
    assert [d["raw"] for d in remote.details] == texts
    assert remote.scores == local.scores
