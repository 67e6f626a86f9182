"""Data-parallel training forwards: route a backbone's transformer through its DDP/FSDP wrapper, skip syncs.

Example (one process: both are no-ops):
    >>> import torch
    >>> from types import SimpleNamespace
    >>> from refine.training.accelerate_setup import make_accelerator
    >>> from refine.training.ddp import forward_through, maybe_no_sync
    >>> backbone = SimpleNamespace(transformer=torch.nn.Linear(2, 2))
    >>> with forward_through(backbone, backbone.transformer), maybe_no_sync(make_accelerator("no"), backbone.transformer, sync=False):
    ...     backbone.transformer(torch.zeros(1, 2)).shape
    torch.Size([1, 2])

Shared by every RL trainer (Edit-R1, MT-EditFlow): backbones call their bare ``self.transformer``,
so the wrapper accelerate returns from ``prepare`` would never see the training forward, and DDP
would never all-reduce the gradients.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Iterator

import torch


@contextlib.contextmanager
def forward_through(backbone, module: torch.nn.Module) -> Iterator[None]:
    """Route calls of `backbone.transformer` through `module`, its DDP/FSDP wrapper, for a while.

    Gradients are synchronised only when the forward runs through the wrapper, but backbones call
    their bare `self.transformer(...)` and read attributes from it (`.dtype`, `.config`) that a
    wrapper does not have. So the bare model stays in place and its `forward` is redirected once:
    the call enters the wrapper, whose own call of the bare model then runs the real forward.
    Rollouts and the frozen (old/reference) passes run outside this block, on the bare model.
    """
    bare = backbone.transformer
    if module is bare:
        yield
        return
    own = "forward" in bare.__dict__  # accelerate's mixed precision installs an instance-level forward
    saved = bare.__dict__.get("forward")
    real_forward = bare.forward
    inside = [False]

    def routed(*args, **kwargs):
        if inside[0]:  # the wrapper calling the bare model: run the real forward
            return real_forward(*args, **kwargs)
        inside[0] = True
        try:
            return module(*args, **kwargs)
        finally:
            inside[0] = False

    bare.forward = routed
    try:
        yield
    finally:
        if own:
            bare.forward = saved
        else:
            del bare.forward


def maybe_no_sync(accelerator, model: torch.nn.Module, sync: bool) -> ContextManager:
    """Skip DDP's gradient all-reduce on all but the last backward of an optimizer step."""
    if sync or accelerator.num_processes == 1:
        return contextlib.nullcontext()
    return accelerator.no_sync(model)
