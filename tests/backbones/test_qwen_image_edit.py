"""QwenImageEditBackbone against diffusers' own pipelines, on tiny components saved and reloaded.

Parity tolerance: 1e-4 on latents and on [0, 1] pixels (float32), at most 1/255 on 8-bit images.
Our loop batches the CFG branches (and several requests) into one transformer pass with padded,
masked text where the pipeline runs one unpadded pass per branch: only float rounding differs
(observed ~1e-6).

The pipelines hard-code a ~1 MP working size (Plus: module constants, plain: inside `__call__`),
which takes minutes on a CPU even with tiny weights; the tests patch those sizes to 32x32 and build
the backbone with the same `pixel_area`, so both sides see identical inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from refine.backbones import load_backbone
from refine.backbones.base import FlowBackbone
from refine.backbones.qwen_image_edit import QwenImageEditBackbone
from refine.errors import ArtifactError, InputError
from refine.rollout.flow_editor import FlowEditor
from refine.rollout.group import denoise, recompute_log_probs, resolve_sampler, sample_group
from refine.rollout.samplers import SamplerConfig
from refine.testing.tiny_diffusers import tiny_qwen_image_edit_dir
from refine.types import EditRequest

AREA = 32 * 32
PROMPTS = ["make the circle blue", "remove the small red square in the top left corner"]


def random_image(seed: int, size=(32, 32)) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray((torch.rand(size[1], size[0], 3, generator=g) * 255).byte().numpy(), "RGB")


def load(variant: str) -> QwenImageEditBackbone:
    return QwenImageEditBackbone.from_pretrained(
        tiny_qwen_image_edit_dir(variant), torch_dtype=torch.float32, pixel_area=AREA, vl_pixel_area=AREA
    )


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (threads only add synchronisation on a busy CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def backbone():
    return load("edit")


@pytest.fixture
def tiny_pipeline_sizes(monkeypatch):
    """Make the pipelines work at 32x32 like the backbone (see the module docstring)."""
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit as edit_module
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as plus_module

    original = edit_module.calculate_dimensions
    monkeypatch.setattr(edit_module, "calculate_dimensions", lambda area, ratio: original(AREA, ratio))
    monkeypatch.setattr(plus_module, "VAE_IMAGE_SIZE", AREA)
    monkeypatch.setattr(plus_module, "CONDITION_IMAGE_SIZE", AREA)


def pipeline_output(backbone, image, prompt, guidance, output_type, seed=0):
    cfg = dict(true_cfg_scale=guidance, negative_prompt=backbone.negative_prompt) if guidance > 1 else dict(true_cfg_scale=1.0)
    return backbone.pipeline(
        image=image, prompt=prompt, num_inference_steps=2, height=32, width=32,
        generator=torch.Generator().manual_seed(seed), output_type=output_type, **cfg,
    ).images


@pytest.mark.parametrize("variant", ["edit", "plus", "2511"])
@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_euler_sampling_matches_the_diffusers_pipeline(variant, guidance, tiny_pipeline_sizes):
    backbone = load(variant)
    assert backbone.variant == ("edit" if variant == "edit" else "plus")
    image = random_image(3)
    cond = backbone.encode_condition([image], [PROMPTS[0]], guidance=guidance)
    ours = denoise(backbone, cond, [0], resolve_sampler("euler", steps=2), guidance)
    latents = pipeline_output(backbone, image, PROMPTS[0], guidance, "latent")
    assert torch.allclose(ours["latents"], latents, atol=1e-4)
    pixels = pipeline_output(backbone, image, PROMPTS[0], guidance, "pt")
    assert torch.allclose(backbone.decode(ours["latents"], cond), pixels, atol=1e-4)


def test_flow_editor_batch_matches_one_pipeline_call_per_request(backbone, tiny_pipeline_sizes):
    """End to end through FlowEditor: two requests of different prompt lengths share each pass."""
    requests = [EditRequest(random_image(i), prompt, seed=10 + i) for i, prompt in enumerate(PROMPTS)]
    results = FlowEditor(backbone, sampler="euler", steps=2, guidance=4.0, batch_size=4).edit(requests)
    for request, result in zip(requests, results):
        expected = pipeline_output(backbone, request.image, request.instruction, 4.0, "pil", seed=request.seed)[0]
        diff = np.abs(np.asarray(result.image, dtype=int) - np.asarray(expected, dtype=int))
        assert diff.max() <= 1
        assert result.steps[0].source == "qwen_image_edit"


def test_flow_editor_groups_requests_of_different_sizes(backbone):
    wide = QwenImageEditBackbone.from_pipeline(backbone.pipeline, pixel_area=64 * 64, vl_pixel_area=AREA)
    requests = [EditRequest(random_image(0, (64, 64)), "add a dot", seed=0), EditRequest(random_image(1, (128, 32)), "add a dot", seed=1)]
    editor = FlowEditor(wide, steps=1, guidance=1.0, batch_size=4)
    together = editor.edit(requests)
    assert [r.image.size for r in together] == [(64, 64), (128, 32)]
    alone = editor.edit(requests[1:])[0]
    assert np.abs(np.asarray(alone.image, dtype=int) - np.asarray(together[1].image, dtype=int)).max() <= 1


def test_implements_the_flow_backbone_protocol(backbone):
    assert isinstance(backbone, FlowBackbone)
    assert backbone.transformer is backbone.pipeline.transformer  # where critics install processors


def test_the_condition_changes_the_edit(backbone):
    image = random_image(0)
    cond = backbone.encode_condition([image, image], PROMPTS, guidance=4.0)
    x = backbone.prepare_noise(cond, [torch.Generator().manual_seed(0)] * 2)
    v = backbone.predict_velocity(x, torch.full((2,), 0.7), cond)
    assert v.shape == x.shape == (2, 16, 16)
    assert not torch.allclose(v[0], v[1], atol=1e-4)  # same noise and image, different instructions
    assert cond.text_mask[0].sum() < cond.text_mask[1].sum()  # the shorter prompt is padded


def test_group_rollouts_are_chunk_invariant_and_log_probs_reevaluate(backbone):
    requests = [EditRequest(random_image(i), prompt) for i, prompt in enumerate(PROMPTS)]
    sde = SamplerConfig(name="sde", steps=3, noise_level=0.7, guidance=4.0)
    outs = [sample_group(backbone, requests, 3, sampler=sde, seed=1, record=True, max_batch=b) for b in (2, 6, 12)]
    for out in outs[1:]:
        for r in range(2):
            assert torch.allclose(out.latents[r], outs[0].latents[r], atol=1e-4)
    traj, cond = outs[-1].batch()
    with torch.no_grad():
        again = recompute_log_probs(backbone, traj, cond)
    assert torch.allclose(again, traj.log_probs, atol=1e-4)


def test_dpm_solver_converges_to_the_euler_solution(backbone):
    # The 6-step accuracy claim is tested on an analytic flow (tests/rollout/test_samplers.py):
    # a random-weight transformer's velocity is not smooth in t, so no solver order shows there.
    request = [EditRequest(random_image(5), PROMPTS[0])]
    run = lambda name, steps: sample_group(backbone, request, 2, sampler=name, steps=steps, guidance=1.0, seed=0).latents[0]  # noqa: E731
    reference = run("euler", 50)
    errors = [float((run("dpm", steps) - reference).abs().mean()) for steps in (4, 16)]
    assert errors[1] < errors[0] / 2, errors


def test_image_policy_resizes_any_size_to_multiples_of_32(backbone):
    prepared = backbone.prepare_images([random_image(0, (50, 30)), Image.new("L", (7, 300))])
    assert all(im.mode == "RGB" and im.width % 32 == 0 and im.height % 32 == 0 for im in prepared)
    assert prepared[0].size == (32, 32)  # 32*32 area, ratio 5:3 rounds to 32x32
    default = QwenImageEditBackbone.from_pipeline(backbone.pipeline)  # the pipelines' ~1 MP policy
    assert default.output_size(Image.new("RGB", (640, 480))) == (1184, 896)
    assert default.output_size(Image.new("RGB", (1024, 1024))) == (1024, 1024)


def test_bad_inputs_are_refused(backbone):
    with pytest.raises(InputError, match="instruction 0 is empty"):
        backbone.encode_condition([random_image(0)], ["   "])
    with pytest.raises(InputError, match="one instruction per image"):
        backbone.encode_condition([random_image(0)], ["a", "b"])
    wide = QwenImageEditBackbone.from_pipeline(backbone.pipeline, pixel_area=64 * 64)
    with pytest.raises(InputError, match="share a size"):
        wide.encode_condition([random_image(0, (64, 64)), random_image(1, (128, 32))], ["a", "b"])
    with pytest.raises(InputError, match="not a multiple of 8"):
        backbone.encode_images(torch.rand(1, 3, 30, 30))


def test_encode_decode_round_trip_shapes(backbone):
    x0 = backbone.encode_images([random_image(0)])
    assert x0.shape == (1, 16, 16)
    cond = backbone.encode_condition([random_image(0)], ["keep it"], guidance=1.0)
    assert cond.negative is None and cond.latent_shape == (16, 16) and cond.image_size == (32, 32)
    assert torch.allclose(backbone.encode_images(torch.rand(1, 3, 32, 32)).flatten(1).std(), x0.flatten(1).std(), rtol=2)
    pixels = backbone.decode(x0, cond)
    assert pixels.shape == (1, 3, 32, 32) and 0 <= float(pixels.min()) and float(pixels.max()) <= 1


def test_loading_through_the_registry_and_errors(tmp_path):
    backbone = load_backbone(f"qwen_image_edit:{tiny_qwen_image_edit_dir('plus')}", dtype="float32", pixel_area=AREA)
    assert backbone.variant == "plus" and backbone.dtype == torch.float32
    with pytest.raises(ArtifactError, match="no diffusers pipeline"):
        QwenImageEditBackbone.from_pretrained(tmp_path / "missing")
