"""The critic on the real Qwen-Image-Edit backbone code path (tiny components saved and reloaded)."""

import pytest
import torch
from PIL import Image

from refine.inline_critic.attach import attach_critic


@pytest.mark.parametrize("variant", ["plus", "2511"])  # 2509 and 2511 (zero_cond_t)
def test_masked_critic_is_invisible_and_unmasked_steers(variant):
    from refine.backbones.qwen_image_edit import QwenImageEditBackbone
    from refine.testing.tiny_diffusers import tiny_qwen_image_edit_dir

    backbone = QwenImageEditBackbone.from_pretrained(tiny_qwen_image_edit_dir(variant), torch_dtype=torch.float32, pixel_area=32 * 32)
    images = [Image.new("RGB", (32, 32), "white"), Image.new("RGB", (32, 32), "red")]
    cond = backbone.encode_condition(images, ["add a blue square", "make the background green please"], guidance=1.0)
    x = backbone.prepare_noise(cond, torch.Generator().manual_seed(0))
    t = torch.tensor([0.7, 0.7])
    dims_text = backbone.transformer.config.joint_attention_dim
    with torch.no_grad():
        plain = backbone.velocity(x, t, cond)
        with attach_critic(backbone.transformer, token=torch.randn(dims_text) * 3, layers=[0], hide_critic=True) as critic:
            hidden = backbone.velocity(x, t, cond)
            assert critic.capture.noise_hidden[0].shape[1] == x.shape[1]  # noise tokens only, not source tokens
            critic.hide_critic = False
            visible = backbone.velocity(x, t, cond)
    torch.testing.assert_close(hidden, plain, atol=1e-5, rtol=1e-4)
    assert (visible - plain).abs().max() > 1e-3
