"""Shadow weights: the old (rollout) policy and the EMA of RL training, the reference policy, the decay schedule.

Example:
    >>> import torch
    >>> from refine.training.shadows import ShadowWeights, decay_at
    >>> layer = torch.nn.Linear(2, 1, bias=False)
    >>> params = [layer.weight]
    >>> with torch.no_grad():
    ...     _ = layer.weight.fill_(1.0)
    >>> old = ShadowWeights(params)                   # a frozen copy: the old policy
    >>> with torch.no_grad():
    ...     _ = layer.weight.fill_(3.0)                   # the trained policy moves on
    >>> with old.swapped_into(params):                # run the old policy (rollouts)
    ...     layer(torch.ones(1, 2)).item()
    2.0
    >>> old.update_(params, decay=0.5)                # old <- 0.5 old + 0.5 trained
    >>> old.tensors[0].tolist(), layer.weight.tolist()
    ([[2.0, 2.0]], [[3.0, 3.0]])

Why shadow copies of the *trainable* parameters rather than a second peft adapter per policy:
one mechanism serves LoRA (the trainable parameters are the adapter's A/B matrices, a few MB)
and full fine-tuning (the whole transformer) alike, and swapping a shadow in is a pointer swap of
each parameter's storage, not a copy. The reference policy of the KL term is the editor with its
LoRA adapters disabled (free), or, for full fine-tuning, a shadow of the initial weights.

Sharded parameters (FSDP2 `fully_shard`: each parameter a `DTensor` whose local tensor is this
process's shard): a shadow holds only the local shard, built after `accelerator.prepare` from the
sharded parameters, so every process keeps 1/N of each policy and updates and swaps touch only
local memory, with no collective. A swap there copies the shard in and back (FSDP2 all-gathers
from the storage it allocated, so a storage pointer swap would go unseen); the copy costs one
shard-sized buffer, which is what the pointer swap saves on replicated weights. Around a swap the
FSDP2 modules of `owner` are resharded: FSDP2 keeps the root module's parameters gathered after a
forward, and a later forward would run those gathered (stale) values instead of the swapped
shards. `sharded_state` wraps the shards back into DTensors for torch's distributed checkpoint.

Schedules (`decay_at`): the old policy follows the trained one with a decay that ramps up,
``decay(k) = min(rate * max(k - flat, 0), max)``: 0 means "old = trained after every update"
(on-policy), values near 1 keep the rollout policy steadier (DiffusionNFT's soft update).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch.distributed.tensor import DTensor


def decay_at(iteration: int, *, flat: int = 0, rate: float = 0.001, maximum: float = 0.5) -> float:
    """The old-policy decay after update `iteration` (0-based): ``min(rate * max(iteration - flat, 0), maximum)``.

    Example:
        >>> [decay_at(k, flat=1, rate=0.25, maximum=0.6) for k in range(5)]
        [0.0, 0.0, 0.25, 0.5, 0.6]
    """
    return float(min(rate * max(iteration - flat, 0), maximum))


def warmup_decay(update: int, maximum: float) -> float:
    """The EMA decay of update `update` (0-based) with the usual warm-up: 0, then ``min((1 + u) / (10 + u), maximum)``.

    The schedule of diffusers' `EMAModel` (without `use_ema_warmup`), which the base editor was
    trained with: the first update copies the weights and the average lengthens as training does.

    Example:
        >>> [round(warmup_decay(u, 0.999), 3) for u in (0, 1, 10, 10**6)]
        [0.0, 0.182, 0.55, 0.999]
    """
    return 0.0 if update <= 0 else float(min((1 + update) / (10 + update), maximum))


class ShadowWeights:
    """A detached copy of a list of parameters that can follow them (EMA) or stand in for them.

    Stored in float32 whatever the parameters' dtype, so a slow EMA of bf16 weights does not
    round away its small updates.
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], owner: torch.nn.Module | None = None) -> None:
        self.tensors = [local_shard(p).detach().float().clone() for p in params]
        # (mesh, placements, global shape, stride) of each sharded parameter, to rebuild its DTensor
        self.specs = [(p.device_mesh, p.placements, p.shape, p.stride()) if isinstance(p, DTensor) else None for p in params]
        self.owner = owner  # the (FSDP2-sharded) module the parameters belong to: resharded around swaps

    @property
    def sharded(self) -> bool:
        return any(spec is not None for spec in self.specs)

    @torch.no_grad()
    def update_(self, params: Sequence[torch.nn.Parameter], decay: float) -> None:
        """``shadow <- decay * shadow + (1 - decay) * param`` for each pair (decay 0 copies)."""
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay={decay} must be in [0, 1]")
        self._check(params)
        for shadow, param in zip(self.tensors, params):
            shadow.lerp_(local_shard(param).detach().float(), 1.0 - decay)

    @torch.no_grad()
    def copy_from(self, params: Sequence[torch.nn.Parameter]) -> None:
        self.update_(params, 0.0)

    @contextmanager
    def swapped_into(self, params: Sequence[torch.nn.Parameter]) -> Iterator[None]:
        """Within the block the parameters hold the shadow values (cast to their dtype); restored after.

        The parameters' own storage is kept aside untouched, so the trained weights and their
        optimizer state are exactly as before when the block exits (even on an exception).
        """
        self._check(params)
        if self.sharded:
            with self._copied_into(params):
                yield
            return
        saved = [p.data for p in params]
        try:
            for param, shadow in zip(params, self.tensors):
                param.data = shadow.to(device=param.device, dtype=param.dtype)
            yield
        finally:
            for param, data in zip(params, saved):
                param.data = data

    @contextmanager
    def _copied_into(self, params: Sequence[torch.nn.Parameter]) -> Iterator[None]:
        """`swapped_into` for sharded parameters: copy each local shard in, and the saved one back after."""
        _reshard(self.owner)
        with torch.no_grad():
            shards = [local_shard(p) for p in params]  # under no_grad: the local tensor itself, not an autograd view
            saved = [shard.detach().clone() for shard in shards]
            for shard, shadow in zip(shards, self.tensors):
                shard.copy_(shadow)
        try:
            yield
        finally:
            _reshard(self.owner)
            with torch.no_grad():
                for shard, kept in zip(shards, saved):
                    shard.copy_(kept)

    def sharded_state(self, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """name -> DTensor over this process's shard (sharing its storage): what `torch.distributed.checkpoint` saves and loads into."""
        if len(names) != len(self.tensors):
            raise ValueError(f"{len(names)} names for {len(self.tensors)} shadow tensors")
        state = {}
        for name, shadow, spec in zip(names, self.tensors, self.specs):
            if spec is None:
                state[name] = shadow
            else:
                mesh, placements, shape, stride = spec
                state[name] = DTensor.from_local(shadow, mesh, placements, run_check=False, shape=shape, stride=stride)
        return state

    def state_dict(self, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """name -> tensor (contiguous CPU copies, ready for safetensors)."""
        if len(names) != len(self.tensors):
            raise ValueError(f"{len(names)} names for {len(self.tensors)} shadow tensors")
        return {name: t.detach().cpu().contiguous() for name, t in zip(names, self.tensors)}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor], names: Sequence[str]) -> None:
        missing = [n for n in names if n not in state]
        if missing:
            raise KeyError(f"shadow state lacks {len(missing)} tensors, e.g. {missing[0]!r}")
        for shadow, name in zip(self.tensors, names):
            shadow.copy_(state[name].to(shadow.device, shadow.dtype))

    def _check(self, params: Sequence[torch.nn.Parameter]) -> None:
        if len(params) != len(self.tensors):
            raise ValueError(f"{len(params)} parameters for {len(self.tensors)} shadow tensors")


def _reshard(module: torch.nn.Module | None) -> None:
    """Free the gathered parameters of every FSDP2 module in `module`: the next forward gathers the shards anew."""
    if module is None:
        return
    from torch.distributed.fsdp import FSDPModule

    for child in module.modules():
        if isinstance(child, FSDPModule):
            child.reshard()


def local_shard(tensor: torch.Tensor) -> torch.Tensor:
    """The part of `tensor` this process holds: the local shard of a DTensor, else the tensor itself.

    >>> local_shard(torch.ones(2)).tolist()
    [1.0, 1.0]
    """
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


@contextmanager
def adapters_disabled(transformer: torch.nn.Module) -> Iterator[None]:
    """Run `transformer` without its peft LoRA adapters (the reference policy of the KL term).

    Example:
        >>> with adapters_disabled(torch.nn.Linear(1, 1)):   # no adapters: nothing to disable
        ...     pass
    """
    has_adapters = bool(getattr(transformer, "peft_config", None))
    if has_adapters:
        transformer.disable_adapters()
    try:
        yield
    finally:
        if has_adapters:
            transformer.enable_adapters()
