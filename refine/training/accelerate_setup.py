"""Accelerate setup and seeding shared by the trainers.

Example:
    >>> import torch
    >>> from refine.training.accelerate_setup import make_accelerator, seeded
    >>> accelerator = make_accelerator("no")
    >>> accelerator.num_processes, accelerator.is_main_process
    (1, True)
    >>> before = torch.random.get_rng_state()
    >>> with seeded(3):
    ...     a = torch.rand(1)
    >>> with seeded(3):
    ...     b = torch.rand(1)
    >>> bool(a == b), torch.equal(before, torch.random.get_rng_state())
    (True, True)

`make_accelerator` builds the `accelerate.Accelerator` a trainer runs under: CPU (gloo under
torchrun) when there is no CUDA, the config's mixed precision, and DDP's
`find_unused_parameters` when the trainer asks for it. `require_replicated` refuses sharded
setups (FSDP, DeepSpeed) for trainers whose shadow weights are swapped into the parameters'
storage, which a sharding wrapper owns. `seeded` runs a block under a seed without disturbing
the caller's RNG (LoRA initialisation), `set_seed` is accelerate's (Python, NumPy, torch, CUDA).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed

from refine.errors import ConfigError

__all__ = ["make_accelerator", "require_replicated", "seeded", "set_seed"]

SHARDED = ("FSDP", "DEEPSPEED", "MEGATRON_LM")


def make_accelerator(mixed_precision: str = "no", *, find_unused_parameters: bool = False) -> Accelerator:
    """An `Accelerator` for one trainer process (see the module docstring)."""
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else []
    return Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available(), kwargs_handlers=handlers)


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
