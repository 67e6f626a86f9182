"""Flow-matching editor backbones, one file per model family, loaded by a short spec string.

Example:
    >>> from refine.backbones import load_backbone
    >>> load_backbone("stable_diffusion:/models/sd")
    Traceback (most recent call last):
    ...
    refine.errors.ConfigError: unknown backbone 'stable_diffusion' in 'stable_diffusion:/models/sd'; valid: flux_kontext:PATH, qwen_image_edit:PATH, shapes[:PATH]

Specs: ``shapes`` (the bundled ShapeEdit editor) or ``shapes:PATH`` (a trained one),
``qwen_image_edit:PATH`` and ``flux_kontext:PATH`` (a diffusers pipeline folder or hub id). Kinds
come from the registry's ``backbone`` category, so a registered kind works here too.

Importing this package is cheap; a backbone's module (torch, diffusers, transformers) is imported
when it is loaded.
"""

from __future__ import annotations

from typing import Any

from refine.errors import ConfigError
from refine.paths import check_model_source

# How each built-in kind is written in a spec (kinds needing a checkpoint say so).
SPEC_FORMS = {"shapes": "shapes[:PATH]", "qwen_image_edit": "qwen_image_edit:PATH", "flux_kontext": "flux_kontext:PATH"}
NEEDS_PATH = {"qwen_image_edit", "flux_kontext"}


def load_backbone(spec: str, *, device: str | None = None, dtype: str | None = None, **options: Any):
    """Load the backbone named by `spec` (``kind`` or ``kind:PATH``).

    `device` / `dtype` (a name like ``"bfloat16"``; default bfloat16 on CUDA, float32 elsewhere) go
    to the diffusers backbones; `options` to the backbone's loader (e.g. ``pixel_area=512 * 512``).
    Unknown kinds raise `ConfigError` listing the valid ones.
    """
    from refine.registry import registry

    kind, _, path = str(spec).partition(":")
    kinds = registry.kinds("backbone")
    if kind not in kinds:
        forms = ", ".join(SPEC_FORMS.get(k, f"{k}[:PATH]") for k in kinds)
        raise ConfigError(f"unknown backbone {kind!r} in {spec!r}; valid: {forms}")
    if kind in NEEDS_PATH and not path:
        raise ConfigError(f"backbone {kind!r} needs a checkpoint: write {SPEC_FORMS[kind]} (a pipeline folder or hub id)")
    if kind in NEEDS_PATH:
        check_model_source(path, f"backbone {kind}")  # "no such folder", not a hub repo-id error
    loader = registry.resolve("backbone", kind)
    if kind == "shapes":
        return loader(path or None, **({"device": device} if device else {}), **options)
    if kind in NEEDS_PATH:
        return loader(path, dtype=dtype, device=device, **options)
    return loader(path or None, **options)


def resolve_dtype(name: str | None, device: str | None = None):
    """A torch dtype from its name; None picks bfloat16 on CUDA and float32 elsewhere.

    >>> str(resolve_dtype("bfloat16")), str(resolve_dtype(None, "cpu"))
    ('torch.bfloat16', 'torch.float32')
    """
    import torch

    if name is None:
        cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
        return torch.bfloat16 if cuda else torch.float32
    if isinstance(name, torch.dtype):
        return name
    name = str(name).removeprefix("torch.")
    value = getattr(torch, {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(name, name), None)
    if not isinstance(value, torch.dtype) or value.is_complex or not value.is_floating_point:
        raise ConfigError(f"dtype={name!r} is not a torch dtype; use bfloat16, float16 or float32")
    return value


def diffusers_dtype_kwargs(dtype) -> dict:
    """The `from_pretrained` keyword for `dtype`: diffusers renamed `torch_dtype` to `dtype` in 0.36."""
    from diffusers.utils import deprecation_utils

    return {"dtype": dtype} if hasattr(deprecation_utils, "_resolve_dtype") else {"torch_dtype": dtype}


__all__ = ["NEEDS_PATH", "SPEC_FORMS", "diffusers_dtype_kwargs", "load_backbone", "resolve_dtype"]
