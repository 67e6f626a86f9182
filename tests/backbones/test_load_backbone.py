import pytest

from refine.backbones import load_backbone, resolve_dtype
from refine.errors import ConfigError
from refine.registry import registry


def test_unknown_backbone_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        load_backbone("sdxl:/models/sdxl")
    message = str(err.value)
    assert "unknown backbone 'sdxl'" in message
    for form in ("shapes[:PATH]", "qwen_image_edit:PATH", "flux_kontext:PATH"):
        assert form in message


@pytest.mark.parametrize("kind", ["qwen_image_edit", "flux_kontext"])
def test_diffusers_backbones_need_a_checkpoint(kind):
    with pytest.raises(ConfigError, match=f"write {kind}:PATH"):
        load_backbone(kind)


def test_backbone_kinds_are_registered_without_importing_them():
    assert {"shapes", "qwen_image_edit", "flux_kontext"} <= set(registry.kinds("backbone"))


def test_dtype_names():
    import torch

    assert resolve_dtype("float32") is torch.float32 and resolve_dtype("torch.float16") is torch.float16
    assert resolve_dtype("bf16") is torch.bfloat16
    for bad in ("int8", "half-precision"):
        with pytest.raises(ConfigError, match=f"dtype={bad!r}"):
            resolve_dtype(bad)
