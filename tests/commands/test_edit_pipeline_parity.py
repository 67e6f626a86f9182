"""`refine edit` on the tiny Qwen-Image-Edit equals diffusers' pipeline called as its docs show.

Tolerance: 8-bit pixels within 1/255 (float32 weights; the only difference is float rounding,
our CFG branches share one batched pass where the pipeline runs two). The pipelines hard-code a
~1 MP source size (module constants / inside `__call__`); as in tests/backbones/, those are
patched to 32x32 and the command gets ``--pixel-area 1024``, so both see the same source.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from refine.backbones.qwen_image_edit import PIPELINES  # diffusers' two classes (after the torchvision check)
from refine.cli import main
from refine.testing.tiny_diffusers import tiny_qwen_image_edit_dir

AREA = 32 * 32
PROMPT = "make the square blue"


@pytest.fixture(autouse=True)
def tiny_pipeline_sizes(monkeypatch):
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit as edit_module
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as plus_module

    original = edit_module.calculate_dimensions
    monkeypatch.setattr(edit_module, "calculate_dimensions", lambda area, ratio: original(AREA, ratio))
    monkeypatch.setattr(plus_module, "VAE_IMAGE_SIZE", AREA)
    torch.set_num_threads(1)


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "src.png"
    pixels = torch.rand(40, 48, 3, generator=torch.Generator().manual_seed(5))
    Image.fromarray((pixels * 255).byte().numpy()).save(path)
    return path


def run_edit(folder, source, out, *args):
    main(["edit", "--backbone", f"qwen_image_edit:{folder}", "--image", str(source), "--instruction", PROMPT,
          "--out", str(out), "--device", "cpu", "--dtype", "float32", "--pixel-area", str(AREA), *args])
    return np.asarray(Image.open(out).convert("RGB"), dtype=np.int16)


def pipeline_image(folder, variant, source, seed, **call):
    pipeline = PIPELINES[variant].from_pretrained(folder, **call.pop("loading", {}))
    pipeline.set_progress_bar_config(disable=True)
    image = pipeline(image=Image.open(source).convert("RGB"), prompt=PROMPT, generator=torch.Generator().manual_seed(seed), **call).images[0]
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize("variant", ["edit", "plus"])
def test_seed_negative_prompt_and_size_equal_the_pipeline(variant, source, tmp_path):
    folder = tiny_qwen_image_edit_dir(variant)
    ours = run_edit(folder, source, tmp_path / "a.png", "--seed", "7", "--steps", "3", "--negative-prompt", "blurry",
                    "--height", "32", "--width", "64")
    expected = pipeline_image(folder, variant, source, 7, num_inference_steps=3, negative_prompt="blurry", true_cfg_scale=4.0,
                              height=32, width=64)
    other_seed = pipeline_image(folder, variant, source, 8, num_inference_steps=3, negative_prompt="blurry", true_cfg_scale=4.0,
                                height=32, width=64)
    assert ours.shape == expected.shape == (32, 64, 3)  # --height/--width are the edit's, not the source's
    assert np.abs(ours - expected).max() <= 1
    assert np.abs(ours - other_seed).max() > 8  # the seed is --seed itself, not one derived from it


def test_defaults_are_the_pipeline_defaults_with_the_documented_negative_prompt(source, tmp_path):
    folder = tiny_qwen_image_edit_dir("edit")
    ours = run_edit(folder, source, tmp_path / "a.png", "--seed", "3")  # 50 steps, true CFG 4.0 with " "
    expected = pipeline_image(folder, "edit", source, 3, negative_prompt=" ")
    assert np.abs(ours - expected).max() <= 1
    no_cfg = run_edit(folder, source, tmp_path / "b.png", "--seed", "3", "--guidance", "1")
    assert np.abs(no_cfg - pipeline_image(folder, "edit", source, 3)).max() <= 1  # the bare call: no negative prompt, no CFG


def test_variant_reads_that_weight_variant(source, tmp_path, capsys):
    folder = tmp_path / "fp16-variant"
    PIPELINES["edit"].from_pretrained(tiny_qwen_image_edit_dir("edit")).save_pretrained(folder, variant="fp16")
    assert list(folder.glob("transformer/*.fp16.safetensors"))
    ours = run_edit(folder, source, tmp_path / "a.png", "--seed", "1", "--steps", "2", "--variant", "fp16")
    expected = pipeline_image(folder, "edit", source, 1, num_inference_steps=2, negative_prompt=" ", loading={"variant": "fp16"})
    assert np.abs(ours - expected).max() <= 1
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["edit", "--backbone", f"qwen_image_edit:{folder}", "--image", str(source), "--instruction", PROMPT,
              "--out", str(tmp_path / "b.png"), "--device", "cpu", "--dtype", "float32", "--steps", "1"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert info.value.code == 2 and len(errors) == 1 and "cannot load Qwen-Image-Edit" in errors[0]  # no plain weight files


def test_pipeline_flags_are_refused_where_the_backbone_has_no_such_option(source, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["edit", "--backbone", "shapes", "--image", str(source), "--instruction", PROMPT, "--out", str(tmp_path / "o.png"),
              "--height", "64"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--height" in err and len(err.strip().splitlines()) == 1
