"""`dropout_off`: run a module in eval mode while gradients still flow (Flow-GRPO's ratio needs it).

Example:
    >>> import torch
    >>> from refine.training.dropout import dropout_off
    >>> model = torch.nn.Sequential(torch.nn.Dropout(0.5)).train()
    >>> with dropout_off(model):
    ...     model.training
    False
    >>> model.training
    True
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def dropout_off(module: torch.nn.Module) -> Iterator[None]:
    """Run `module` in eval mode (dropout off, gradients still flow), restoring its modes after.

    Flow-GRPO's ratio compares the training forward with the rollout's: a dropout mask drawn in
    one and not the other moves the ratio far outside its 1e-4 clip range.
    """
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.train(training)
