"""Accelerate setup and seeding shared by the trainers.

Example:
    >>> import torch
    >>> from refine.training.accelerate_setup import is_sharded, make_accelerator, seeded
    >>> accelerator = make_accelerator("no")
    >>> accelerator.num_processes, accelerator.is_main_process, is_sharded(accelerator)
    (1, True, False)
    >>> before = torch.random.get_rng_state()
    >>> with seeded(3):
    ...     a = torch.rand(1)
    >>> with seeded(3):
    ...     b = torch.rand(1)
    >>> bool(a == b), torch.equal(before, torch.random.get_rng_state())
    (True, True)

`make_accelerator` builds the `accelerate.Accelerator` a trainer runs under: CPU (gloo under
torchrun) when there is no CUDA, the config's mixed precision, DDP's `find_unused_parameters`
when the trainer asks for it, and FSDP2 when the launch asks for it (`accelerate launch
--config_file examples/accelerate/edit_r1_fsdp2.yaml`, which sets `ACCELERATE_USE_FSDP=true` and
`FSDP_VERSION=2`; torchrun users set those variables themselves). `require_supported` refuses the
sharded setups a trainer cannot run (FSDP1, DeepSpeed, Megatron) with a message naming the one it
can. `seeded` runs a block under a seed without disturbing the caller's RNG (LoRA
initialisation), `set_seed` is accelerate's (Python, NumPy, torch, CUDA).

Why `make_accelerator` switches FSDP on by hand on CPU: accelerate enables FSDP only on
accelerator devices (its state machine leaves a multi-process CPU run at `MULTI_CPU` and drops
the plugin), while torch's FSDP2 (`fully_shard`) runs on CPU over gloo. Setting the state's
`distributed_type` and plugin as accelerate's own GPU branch does makes `accelerator.prepare`
take the very code path (`fsdp2_prepare_model`) a GPU run takes, so the sharded trainer is
tested here on CPU, not a look-alike.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, set_seed

from refine.errors import ConfigError

__all__ = ["is_sharded", "make_accelerator", "require_replicated", "require_supported", "seeded", "set_seed"]

SHARDED = ("FSDP", "DEEPSPEED", "MEGATRON_LM")


def make_accelerator(mixed_precision: str = "no", *, find_unused_parameters: bool = False) -> Accelerator:
    """An `Accelerator` for one trainer process (see the module docstring)."""
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else []
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available(), kwargs_handlers=handlers)
    state = accelerator.state
    wants_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if wants_fsdp and state.distributed_type == DistributedType.MULTI_CPU:
        from accelerate import FullyShardedDataParallelPlugin

        plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* variables, as accelerate does on GPU
        if mixed_precision != "no":
            plugin.set_mixed_precision(mixed_precision)
        state.fsdp_plugin = plugin
        state.distributed_type = DistributedType.FSDP
        # every later AcceleratorState() re-reads the type from PartialState's shared state (as on GPU)
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    return accelerator


def is_sharded(accelerator: Accelerator) -> bool:
    """True when `accelerator` shards parameters with FSDP2 (`fully_shard`): parameters are DTensors.

    >>> is_sharded(make_accelerator("no"))
    False
    """
    return accelerator.distributed_type == DistributedType.FSDP and bool(getattr(accelerator, "is_fsdp2", False))


def require_supported(accelerator: Accelerator, trainer: str) -> None:
    """`ConfigError` unless `accelerator` is single-process, DDP or FSDP2: what the RL trainers support.

    >>> require_supported(make_accelerator("no"), "edit-r1")
    """
    name = accelerator.distributed_type.name
    if name == "FSDP" and not is_sharded(accelerator):
        raise ConfigError(
            f"{trainer} runs under FSDP2 only (fully_shard), not FSDP1: set fsdp_version: 2 in the accelerate config "
            "(examples/accelerate/edit_r1_fsdp2.yaml)"
        )
    if name in ("DEEPSPEED", "MEGATRON_LM"):
        raise ConfigError(
            f"accelerate distributed_type={name} is not supported by {trainer}: its old-policy/EMA shadows are built from "
            "FSDP2 shards; launch with examples/accelerate/edit_r1_fsdp2.yaml (sharded) or edit_r1_ddp.yaml (replicated)"
        )


def require_replicated(accelerator: Accelerator, trainer: str, hint: str = "launch with a DDP accelerate config") -> None:
    """`ConfigError` when `accelerator` shards parameters (FSDP, DeepSpeed): `trainer` supports DDP only.

    >>> require_replicated(make_accelerator("no"), "edit-r1")
    """
    name = accelerator.distributed_type.name
    if name in SHARDED:
        raise ConfigError(f"accelerate distributed_type={name} is not supported by {trainer} yet; {hint}")


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's global RNG seeded by `seed`; the previous state is restored after."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)
