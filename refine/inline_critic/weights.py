"""Critic weights and training modules as safetensors, written atomically.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from refine.inline_critic.weights import load_critic_weights, save_critic_weights
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = save_critic_weights(Path(tmp) / "critic.safetensors", torch.ones(16),
    ...                                {"backbone": "shapes", "text_dim": 16, "num_layers": 2})
    ...     token, meta = load_critic_weights(path)
    >>> token.shape, meta["backbone"], meta["format"]
    (torch.Size([16]), 'shapes', 'refine.inline_critic')

Two kinds of files (training checkpoints come from the shared layer, `refine.training.checkpoint`):
* inference weights (`critic.safetensors`): the critic token only, plus metadata naming the
  backbone and its sizes (checked when a refiner loads it). A few KB for ShapeEdit, 14 KB for
  Qwen-Image-Edit (3584 floats). Probes and projections are never in it.
* training modules (`stage{1,2,3}.safetensors`): token + probes + projections (or LoRA weights),
  what a later stage or `refine critic analyze` starts from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from refine.errors import ArtifactError
from refine.training.checkpoint import save_tensors_atomic

FORMAT = "refine.inline_critic"
FORMAT_VERSION = "1"


def save_critic_weights(path: str | Path, token: torch.Tensor, metadata: dict[str, Any]) -> Path:
    """Write the inference weights: `critic_token` (text_dim,) and string metadata."""
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **{k: str(v) for k, v in metadata.items()}}
    return save_tensors_atomic(path, {"critic_token": token.float()}, meta)


def load_critic_weights(path: str | Path) -> tuple[torch.Tensor, dict[str, str]]:
    """(critic_token, metadata) from inference weights; `ArtifactError` when missing or not a critic file."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"critic weights not found: {path}; train them with `refine train inline-critic`")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            keys = list(handle.keys())
            tensors = {key: handle.get_tensor(key) for key in keys}
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise ArtifactError(f"{path}: not a readable safetensors file ({err})") from None
    if metadata.get("format") != FORMAT or "critic_token" not in tensors:
        raise ArtifactError(f"{path}: not inline-critic weights (format={metadata.get('format')!r}, keys={keys})")
    return tensors["critic_token"], metadata


def save_modules(path: str | Path, state: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """Training modules (token, probes, projections or LoRA weights) with metadata."""
    meta = {"format": FORMAT + ".train", "format_version": FORMAT_VERSION, **{k: str(v) for k, v in metadata.items()}}
    return save_tensors_atomic(path, state, meta)


def load_modules(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"training modules not found: {path}; run the earlier stage first (--stage 1 / 2)")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    return load_file(str(path)), metadata
