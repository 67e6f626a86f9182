"""The trainable state of an RL fine-tuning run (trained, old, EMA, reference policies), checkpointed together.

Example:
    >>> import torch
    >>> from refine.backbones.shapes import build_shapes_backbone
    >>> from refine.training.policies import setup_policies
    >>> backbone = build_shapes_backbone(layers=1, width=32, heads=2, vocabulary=["red"])
    >>> state = setup_policies(backbone, finetune="lora", lora_rank=4, kl=True)
    >>> len(state.params) == len(state.names) == len(state.old.tensors) == len(state.ema.tensors)
    True
    >>> state.reference_kind
    'adapters_disabled'

Used by the Edit-R1 and multi-turn trainers. `PolicyState` holds the trainable parameters (LoRA
A/B matrices or the whole transformer), the old policy and the EMA as `ShadowWeights`, and how
to reach the reference policy. What a checkpoint stores for it: `trained`, `old`, `ema` (and
`reference` for full fine-tuning) as safetensors keyed by parameter name; under FSDP2 one
distributed checkpoint `policies/` with the same four groups, each process writing its shards.

Order under a sharding accelerator (FSDP2): `make_trainable` (LoRA added, trainable flags set:
the optimizer's parameters), then `accelerator.prepare`, which shards the transformer and
replaces its parameters by DTensors, then `build_policies` on the prepared transformer, so the
shadows are made from the shards (each process keeps its own 1/N; a full copy of a 20B model
never exists on one device). `setup_policies` is both steps at once for a replicated run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ContextManager, Literal

import torch

from refine.errors import ArtifactError
from refine.training.accelerate_setup import seeded
from refine.training.checkpoint import CheckpointWriter, read_distributed, read_tensors
from refine.training.lora import ATTENTION_TARGETS, add_lora, trainable_parameters
from refine.training.shadows import ShadowWeights, adapters_disabled


@dataclass
class PolicyState:
    """Trainable parameters (by name) and the shadow policies derived from them."""

    names: list[str]
    params: list[torch.nn.Parameter]
    old: ShadowWeights
    ema: ShadowWeights
    reference: ShadowWeights | None
    reference_kind: Literal["adapters_disabled", "initial_weights", "none"]
    transformer: torch.nn.Module

    def reference_context(self) -> Callable[[], ContextManager] | None:
        """A factory of context managers under which the backbone runs the reference policy."""
        if self.reference_kind == "adapters_disabled":
            return lambda: adapters_disabled(self.transformer)
        if self.reference_kind == "initial_weights":
            assert self.reference is not None
            return lambda: self.reference.swapped_into(self.params)
        return None

    @property
    def sharded(self) -> bool:
        """True when the parameters are FSDP2 shards (the shadows then hold shards too)."""
        return self.old.sharded

    def trained_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().contiguous() for n, p in zip(self.names, self.params)}

    def distributed_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """The four policies as DTensors sharing the live storage: saved from and loaded into in place."""
        state = {
            "trained": dict(zip(self.names, self.params)),
            "old": self.old.sharded_state(self.names),
            "ema": self.ema.sharded_state(self.names),
        }
        if self.reference is not None:
            state["reference"] = self.reference.sharded_state(self.names)
        return state

    def save(self, writer: CheckpointWriter) -> None:
        if self.sharded:  # every process writes its shards
            writer.save_distributed("policies", self.distributed_state())
            return
        writer.save_tensors("trained", self.trained_state())
        writer.save_tensors("old", self.old.state_dict(self.names))
        writer.save_tensors("ema", self.ema.state_dict(self.names))
        if self.reference is not None:
            writer.save_tensors("reference", self.reference.state_dict(self.names))

    @torch.no_grad()
    def load(self, folder) -> None:
        if self.sharded:
            read_distributed(folder, "policies", self.distributed_state())
            return
        trained = read_tensors(folder, "trained")
        missing = [n for n in self.names if n not in trained]
        if missing:
            raise ArtifactError(
                f"checkpoint {folder} does not match this model: {len(missing)} trainable tensors missing, e.g. {missing[0]!r} "
                "(was it written with other lora/finetune settings?)"
            )
        for name, param in zip(self.names, self.params):
            param.copy_(trained[name].to(param.device, param.dtype))
        self.old.load_state_dict(read_tensors(folder, "old"), self.names)
        self.ema.load_state_dict(read_tensors(folder, "ema"), self.names)
        if self.reference is not None:
            self.reference.load_state_dict(read_tensors(folder, "reference"), self.names)


def setup_policies(
    backbone,
    *,
    finetune: Literal["lora", "full"] = "lora",
    lora_rank: int = 32,
    lora_alpha: float | None = None,
    lora_targets=None,
    lora_dropout: float = 0.0,
    kl: bool = True,
    seed: int = 0,
) -> PolicyState:
    """Make the backbone's transformer trainable (LoRA or full) and create old/EMA/reference policies.

    Everything but the transformer (text encoder, VAE) is frozen. The LoRA init is seeded with
    `seed` without disturbing the caller's RNG. Sharded runs call `make_trainable`, prepare, then
    `build_policies` instead (module docstring).
    """
    make_trainable(
        backbone, finetune=finetune, lora_rank=lora_rank, lora_alpha=lora_alpha, lora_targets=lora_targets,
        lora_dropout=lora_dropout, seed=seed,
    )
    return build_policies(backbone.transformer, finetune=finetune, kl=kl)


def make_trainable(
    backbone,
    *,
    finetune: Literal["lora", "full"] = "lora",
    lora_rank: int = 32,
    lora_alpha: float | None = None,
    lora_targets=None,
    lora_dropout: float = 0.0,
    seed: int = 0,
) -> list[torch.nn.Parameter]:
    """Freeze all but the transformer, add the (seeded) LoRA or unfreeze it all; returns the trainable parameters."""
    transformer = backbone.transformer
    for module in _frozen_parts(backbone):
        module.requires_grad_(False)
    if finetune == "lora":
        with seeded(seed):
            add_lora(
                transformer,
                rank=lora_rank,
                alpha=lora_alpha,
                targets=tuple(lora_targets or ATTENTION_TARGETS),
                dropout=lora_dropout,
            )
    elif finetune == "full":
        transformer.requires_grad_(True)
    else:
        raise ValueError(f"finetune={finetune!r}; use 'lora' or 'full'")
    names, params = trainable_parameters(transformer)
    if not params:
        raise ArtifactError(f"no trainable parameters in {type(transformer).__name__} after setting up finetune={finetune!r}")
    return params


def build_policies(transformer: torch.nn.Module, *, finetune: Literal["lora", "full"] = "lora", kl: bool = True) -> PolicyState:
    """The policy state over `transformer`'s trainable parameters as they are now (after `prepare` when sharded)."""
    names, params = trainable_parameters(transformer)
    reference = ShadowWeights(params, transformer) if (kl and finetune == "full") else None
    kind = "none" if not kl else ("adapters_disabled" if finetune == "lora" else "initial_weights")
    return PolicyState(
        names=names,
        params=params,
        old=ShadowWeights(params, transformer),
        ema=ShadowWeights(params, transformer),
        reference=reference,
        reference_kind=kind,
        transformer=transformer,
    )


def frozen_modules(backbone) -> list[torch.nn.Module]:
    """The backbone's frozen model components (text encoder, VAE...): its module attributes but the transformer.

    >>> from refine.backbones.shapes import build_shapes_backbone
    >>> [type(m).__name__ for m in frozen_modules(build_shapes_backbone(layers=1, width=32, heads=2, vocabulary=["red"]))]
    ['ShapesTextEncoder']
    """
    seen, found = {id(backbone.transformer)}, []
    children = [m for _, m in backbone.named_children()] if isinstance(backbone, torch.nn.Module) else []
    for module in children + _frozen_parts(backbone)[1 if isinstance(backbone, torch.nn.Module) else 0:]:
        if id(module) not in seen:
            seen.add(id(module))
            found.append(module)
    return found


def _frozen_parts(backbone) -> list[torch.nn.Module]:
    """Every module of the backbone: itself, its attributes and its diffusers pipeline's components."""
    parts = [backbone] if isinstance(backbone, torch.nn.Module) else []
    parts += [v for v in vars(backbone).values() if isinstance(v, torch.nn.Module)]
    pipeline = getattr(backbone, "pipeline", None)
    parts += [v for v in getattr(pipeline, "components", {}).values() if isinstance(v, torch.nn.Module)]
    return parts
