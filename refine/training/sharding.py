"""FSDP2 helpers for the RL trainers: frozen parts, optimizer state, full weights on demand.

Example (nothing is sharded in one process: every helper passes tensors through):
    >>> import torch
    >>> from refine.training.sharding import full_tensors
    >>> full_tensors({"w": torch.ones(2)})["w"].tolist()
    [1.0, 1.0]

The trained transformer is sharded by `accelerator.prepare` (accelerate's FSDP2 plugin: one
`fully_shard` per transformer block, then the root). What this module adds around it:
- `shard_frozen`: the frozen text encoder / VAE under `fully_shard` too (`train.frozen=shard`),
  per `_no_split_modules` layer when the model names them, then as a whole, so each process
  stores 1/N of them and gathers a layer at a time in their forward. The default (`replicate`)
  keeps a full copy on every process, which costs memory but no communication.
- `optimizer_state` / `load_optimizer_state`: the sharded optimizer state through torch's
  state-dict API, keyed by parameter name, for `torch.distributed.checkpoint`.
- `full_tensors` / `full_model_state`: gathered full weights (exports, digests). Both are
  collectives: every process calls them in the same order.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch.distributed.tensor import DTensor

from refine.training.checkpoint import read_distributed


def full_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """name -> full CPU tensor: DTensors all-gathered (collective, same order on every process), others copied."""
    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu().contiguous() for k, v in tensors.items()}


def shard_frozen(modules: Iterable[torch.nn.Module], mesh=None) -> int:
    """`fully_shard` each module with parameters (per `_no_split_modules` layer, then the root); returns how many."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    count = 0
    for module in modules:
        if isinstance(module, FSDPModule) or not any(True for _ in module.parameters()):
            continue
        layers = set(getattr(module, "_no_split_modules", None) or ())
        for child in list(module.modules())[1:]:
            if type(child).__name__ in layers:
                fully_shard(child, mesh=mesh)
        fully_shard(module, mesh=mesh)
        count += 1
    return count


def _bare(optimizer) -> torch.optim.Optimizer:
    while hasattr(optimizer, "optimizer"):  # accelerate's AcceleratedOptimizer
        optimizer = optimizer.optimizer
    return optimizer


def optimizer_state(model: torch.nn.Module, optimizer) -> dict[str, Any]:
    """The optimizer's state keyed by parameter name, each process holding its shards (for `save_distributed`)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, _bare(optimizer))


def load_optimizer_state(model: torch.nn.Module, optimizer, folder, name: str = "optimizer") -> None:
    """Load the state `optimizer_state` saved under `folder/name/` into the (sharded) optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    from pathlib import Path

    from torch.distributed.checkpoint import FileSystemReader

    # The template has a state for every parameter (torch fills it with a zero-gradient step), but
    # parameters that never had a gradient (the last block's unused text projection) have none
    # in the checkpoint: they are left out, so they resume without state, as they were saved.
    saved = set(FileSystemReader(str(Path(folder) / name)).read_metadata().state_dict_metadata)
    template = optimizer_state(model, optimizer)
    template["state"] = {
        param: values for param, values in template["state"].items() if any(f"state.{param}.{key}" in saved for key in values)
    }
    state = read_distributed(folder, name, template)
    set_optimizer_state_dict(model, _bare(optimizer), optim_state_dict=state, options=StateDictOptions(strict=False))


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights, gathered to CPU on the main process (empty elsewhere); collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_full_transformer(model: torch.nn.Module, state: dict[str, torch.Tensor], folder) -> None:
    """Write gathered weights as a diffusers model folder (config.json + safetensors) that `from_pretrained` loads.

    diffusers' `save_pretrained` would read the sharded `state_dict()` and name the FSDP subclass
    in the config, so the folder is written here from the gathered `state` and the original class.
    """
    import json
    from pathlib import Path

    from safetensors.torch import save_file
    from torch.distributed.fsdp import FSDPModule

    cls = type(model)
    if isinstance(model, FSDPModule):  # fully_shard swaps in a subclass FSDP<Name>(FSDPModule, <Name>)
        cls = next(base for base in cls.__mro__[1:] if not issubclass(base, FSDPModule))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
    config["_class_name"] = cls.__name__
    config["_diffusers_version"] = getattr(model.config, "_diffusers_version", None) or _diffusers_version()
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=list) + "\n")
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "diffusion_pytorch_model.safetensors"))


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__
