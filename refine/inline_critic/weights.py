"""Critic weights and training checkpoints as safetensors, written atomically.

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

Three kinds of files:
* inference weights (`critic.safetensors`): the critic token only, plus metadata naming the
  backbone and its sizes (checked when a refiner loads it). A few KB for ShapeEdit, 14 KB for
  Qwen-Image-Edit (3584 floats). Probes and projections are never in it.
* training modules (`stage{1,2,3}.safetensors`): token + probes + projections (or LoRA weights),
  what a later stage or `refine critic analyze` starts from.
* checkpoint folder (`checkpoint/`): modules, optimizer and scheduler state, step and RNG states,
  all tensors in safetensors and the rest in JSON; replaced atomically so a crash mid-write leaves
  the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from refine.errors import ArtifactError

FORMAT = "refine.inline_critic"
FORMAT_VERSION = "1"


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; weights are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_critic_weights(path: str | Path, token: torch.Tensor, metadata: dict[str, Any]) -> Path:
    """Write the inference weights: `critic_token` (text_dim,) and string metadata."""
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **{k: str(v) for k, v in metadata.items()}}
    return _atomic_save({"critic_token": token.float()}, Path(path), meta)


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
    return _atomic_save(state, Path(path), meta)


def load_modules(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"training modules not found: {path}; run the earlier stage first (--stage 1 / 2)")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    return load_file(str(path)), metadata


# -- checkpoints ---------------------------------------------------------------------------------


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, rest = {}, {"param_groups": state["param_groups"], "scalars": {}}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value
            else:
                rest["scalars"][f"{index}.{name}"] = value
    return tensors, rest


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in rest["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def save_checkpoint(folder: str | Path, *, modules: dict[str, torch.Tensor], optimizer, scheduler, info: dict[str, Any]) -> Path:
    """Write `folder` (modules, optimizer, scheduler, RNG, `info` such as stage and step) atomically."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    opt_tensors, opt_rest = _flatten_optimizer(optimizer.state_dict())
    rng = {"torch": torch.get_rng_state()}
    save_file({k: v.detach().contiguous().cpu() for k, v in modules.items()}, str(tmp / "modules.safetensors"))
    save_file({**{k: v.contiguous().cpu() for k, v in opt_tensors.items()}, **{f"rng.{k}": v for k, v in rng.items()}},
              str(tmp / "optimizer.safetensors"))
    np_state = np.random.get_state()
    state = {
        "info": info,
        "optimizer": opt_rest,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "python_rng": _jsonable(random.getstate()),
        "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    (tmp / "state.json").write_text(json.dumps(state))
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def load_checkpoint(folder: str | Path) -> dict[str, Any] | None:
    """The checkpoint in `folder` (None when there is none): modules, optimizer state, info...; RNG restored."""
    folder = Path(folder)
    if not (folder / "state.json").is_file():
        return None
    state = json.loads((folder / "state.json").read_text())
    modules = load_file(str(folder / "modules.safetensors"))
    tensors = load_file(str(folder / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("rng.torch"))
    random.setstate(_tuplify(state["python_rng"]))
    np_state = state["numpy_rng"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    return {
        "info": state["info"],
        "modules": modules,
        "optimizer": _unflatten_optimizer(tensors, state["optimizer"]),
        "scheduler": state["scheduler"],
    }


def _jsonable(value):
    return [_jsonable(v) for v in value] if isinstance(value, tuple) else value


def _tuplify(value):
    return tuple(_tuplify(v) for v in value) if isinstance(value, list) else value
