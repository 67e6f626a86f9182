"""FluxKontextBackbone against diffusers' FluxKontextPipeline, on tiny components saved and reloaded.

Parity tolerance: 1e-4 on latents and [0, 1] pixels (float32). FLUX pads T5 text to a fixed length
(no mask), so batching changes nothing but float rounding (observed < 1e-6). The pipeline runs with
`_auto_resize=False, max_area=32*32`, the backbone with the same policy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from refine.backbones import load_backbone
from refine.backbones.base import FlowBackbone
from refine.backbones.flux_kontext import FluxKontextBackbone
from refine.errors import ArtifactError, ConfigError, InputError
from refine.rollout.flow_editor import FlowEditor
from refine.rollout.group import denoise, resolve_sampler, sample_group
from refine.testing.tiny_diffusers import tiny_flux_kontext_dir
from refine.types import EditRequest

AREA = 32 * 32
SMALL = dict(auto_resize=False, max_area=AREA, max_sequence_length=32)


def random_image(seed: int, size=(32, 32)) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray((torch.rand(size[1], size[0], 3, generator=g) * 255).byte().numpy(), "RGB")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (threads only add synchronisation on a busy CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def backbone():
    return FluxKontextBackbone.from_pretrained(tiny_flux_kontext_dir(), torch_dtype=torch.float32, **SMALL)


def pipeline_output(backbone, image, prompt, guidance, output_type, seed=0, **extra):
    return backbone.pipeline(
        image=image, prompt=prompt, num_inference_steps=2, height=32, width=32, max_area=AREA, _auto_resize=False,
        max_sequence_length=32, guidance_scale=guidance, generator=torch.Generator().manual_seed(seed),
        output_type=output_type, **extra,
    ).images


@pytest.mark.parametrize("true_cfg", [1.0, 2.0])
def test_euler_sampling_matches_the_diffusers_pipeline(backbone, true_cfg):
    model = FluxKontextBackbone.from_pipeline(backbone.pipeline, true_cfg_scale=true_cfg, negative_prompt="blurry", **SMALL)
    image = random_image(1)
    cond = model.encode_condition([image], ["make the circle blue"], guidance=3.0)
    assert (cond.negative is not None) == (true_cfg > 1)
    ours = denoise(model, cond, [0], resolve_sampler("euler", steps=2), 3.0)
    extra = dict(true_cfg_scale=true_cfg, negative_prompt="blurry") if true_cfg > 1 else {}
    latents = pipeline_output(model, image, "make the circle blue", 3.0, "latent", **extra)
    assert torch.allclose(ours["latents"], latents, atol=1e-4)
    pixels = pipeline_output(model, image, "make the circle blue", 3.0, "pt", **extra)
    assert torch.allclose(model.decode(ours["latents"], cond), pixels, atol=1e-4)


def test_flow_editor_matches_the_pipeline_per_request(backbone):
    requests = [EditRequest(random_image(i), text, seed=i) for i, text in enumerate(["add a red square", "make it green"])]
    results = FlowEditor(backbone, steps=2, guidance=2.5, batch_size=2).edit(requests)
    for request, result in zip(requests, results):
        expected = pipeline_output(backbone, request.image, request.instruction, 2.5, "pil", seed=request.seed)[0]
        assert np.abs(np.asarray(result.image, dtype=int) - np.asarray(expected, dtype=int)).max() <= 1
        assert result.steps[0].info["guidance"] == 2.5


def test_implements_the_flow_backbone_protocol(backbone):
    assert isinstance(backbone, FlowBackbone)
    assert backbone.transformer is backbone.pipeline.transformer  # where critics install processors


def test_embedded_guidance_is_part_of_the_condition(backbone):
    cond = backbone.encode_condition([random_image(0)], ["make it green"])
    assert cond.extras["guidance"].tolist() == [2.5] and cond.negative is None  # Kontext's default
    x = backbone.prepare_noise(cond, [torch.Generator().manual_seed(0)])
    t = torch.tensor([0.6])
    with torch.no_grad():
        default = backbone.predict_velocity(x, t, cond)
        stronger = backbone.predict_velocity(x, t, cond, guidance=6.0)
        assert torch.allclose(default, backbone.velocity(x, t, cond))
    assert not torch.allclose(default, stronger, atol=1e-5)
    assert cond.text.shape[1] == 32 and bool(cond.text_mask.all())  # fixed-length T5 text, no padding mask


def test_group_rollouts_do_not_depend_on_chunking(backbone):
    requests = [EditRequest(random_image(0), "add a red square"), EditRequest(random_image(1), "remove it")]
    outs = [sample_group(backbone, requests, 3, sampler="sde", steps=2, seed=0, max_batch=b) for b in (1, 3, 6)]
    for out in outs[1:]:
        for r in range(2):
            assert torch.allclose(out.latents[r], outs[0].latents[r], atol=1e-4)


def test_image_policy(backbone):
    # Kontext's default: the preferred training resolution closest to the aspect ratio
    kontext = FluxKontextBackbone.from_pipeline(backbone.pipeline)
    assert kontext.output_size(Image.new("RGB", (640, 480))) == (1184, 880)
    assert kontext.output_size(Image.new("RGB", (300, 1000))) == (672, 1568)
    # auto_resize=False: about max_area pixels at the image's aspect ratio, multiples of 4 here (VAE 2x)
    prepared = backbone.prepare_images([random_image(0, (50, 30)), Image.new("RGBA", (3, 200))])
    assert prepared[0].size == (40, 24) and prepared[0].mode == "RGB"
    assert prepared[1].width >= 4 and prepared[1].width % 4 == 0 and prepared[1].height % 4 == 0


def test_bad_inputs_and_options(backbone, tmp_path):
    with pytest.raises(InputError, match="instruction 0 is empty"):
        backbone.encode_condition([random_image(0)], [""])
    with pytest.raises(ConfigError, match="max_sequence_length=600"):
        FluxKontextBackbone.from_pipeline(backbone.pipeline, max_sequence_length=600)
    with pytest.raises(ConfigError, match="unknown FluxKontextBackbone options"):
        FluxKontextBackbone.from_pipeline(backbone.pipeline, pixel_area=5)
    with pytest.raises(ArtifactError, match="cannot load FLUX.1 Kontext"):
        FluxKontextBackbone.from_pretrained(tmp_path)
    loaded = load_backbone(f"flux_kontext:{tiny_flux_kontext_dir()}", dtype="float32", **SMALL)
    assert loaded.name == "flux_kontext" and loaded.dtype == torch.float32
