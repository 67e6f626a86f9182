"""LoRA files in diffusers' format: diffusers pipelines load what `save_lora` writes."""

import pytest
import torch

from refine.training.lora import add_lora, lora_state_dict, save_lora


def randomise_lora(transformer, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("family", ["qwen_image_edit_2509", "flux_kontext"])
def test_pipelines_load_the_saved_lora(family, tmp_path):
    from diffusers import FluxKontextPipeline, QwenImageEditPlusPipeline

    from refine.testing.tiny_diffusers import tiny_flux_kontext_dir, tiny_qwen_image_edit_dir

    cls, folder = {
        "qwen_image_edit_2509": (QwenImageEditPlusPipeline, tiny_qwen_image_edit_dir("plus")),
        "flux_kontext": (FluxKontextPipeline, tiny_flux_kontext_dir()),
    }[family]
    trained = cls.from_pretrained(folder)
    add_lora(trained.transformer, rank=4)
    randomise_lora(trained.transformer)
    save_lora(trained.transformer, tmp_path)

    fresh = cls.from_pretrained(folder)
    fresh.load_lora_weights(tmp_path, adapter_name="edit_r1")  # diffusers' own loader
    want, got = lora_state_dict(trained.transformer), lora_state_dict(fresh.transformer, "edit_r1")
    assert want.keys() == got.keys() and len(want) > 0
    assert all(torch.equal(want[k], got[k]) for k in want)
