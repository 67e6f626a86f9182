"""LoRA on the MM-DiT's attention projections with peft, saved in the format diffusers pipelines load.

Example:
    >>> import tempfile
    >>> from refine.backbones.shapes import build_shapes_backbone
    >>> from refine.training.lora import add_lora, load_lora, save_lora, trainable_parameters
    >>> backbone = build_shapes_backbone(layers=1, width=32, heads=2, vocabulary=["red"])
    >>> add_lora(backbone.transformer, rank=4)
    >>> names, params = trainable_parameters(backbone.transformer)
    >>> names[0]
    'transformer_blocks.0.attn.to_q.lora_A.default.weight'
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = save_lora(backbone.transformer, tmp)
    ...     fresh = build_shapes_backbone(layers=1, width=32, heads=2, vocabulary=["red"])
    ...     load_lora(fresh.transformer, tmp, adapter_name="edit_r1")
    >>> path.name, fresh.transformer.active_adapters()
    ('pytorch_lora_weights.safetensors', ['edit_r1'])

Targets: the attention projections of both MM-DiT streams, named as in diffusers'
`QwenImageTransformer2DModel` and `FluxTransformer2DModel` (image stream `to_q/to_k/to_v/to_out.0`,
text stream `add_q_proj/add_k_proj/add_v_proj/to_add_out`). FLUX's single-stream blocks have no
`add_*` projections; peft simply finds fewer matches there.

File format: `pytorch_lora_weights.safetensors` with keys prefixed `transformer.` and the peft
config in the safetensors metadata, written by diffusers' own `save_lora_weights` (the Qwen-Image
loader mixin; FLUX's writes the same layout). `pipeline.load_lora_weights(folder)` of
`QwenImageEditPlusPipeline` / `FluxKontextPipeline` accepts it, and so does
`transformer.load_lora_adapter(folder, prefix="transformer")` for a bare transformer.

Sharded transformers (FSDP2): `lora_state_dict` all-gathers every adapter tensor (each is a DTensor
holding one shard per process) before anything is written, so every process must call it, and
`save_lora(..., write=is_main)` has the main process alone write the file. Saving what
`state_dict()` returns on the main process without that gather writes only its own slice of
each matrix (the accelerate FSDP2 + peft pitfall); the round-trip test in
tests/edit_r1/test_fsdp.py reloads the export and compares it with the unsharded run's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from refine.editor import is_white_box
from refine.errors import ArtifactError, ConfigError

if TYPE_CHECKING:  # torch, peft and diffusers load on first use: the configs import ATTENTION_TARGETS
    import torch

ATTENTION_TARGETS: tuple[str, ...] = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "add_q_proj",
    "add_k_proj",
    "add_v_proj",
    "to_add_out",
)
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def add_lora(
    transformer: torch.nn.Module,
    *,
    rank: int = 32,
    alpha: float | None = None,
    targets: Sequence[str] = ATTENTION_TARGETS,
    dropout: float = 0.0,
    adapter_name: str = "default",
    init: bool | str = True,
) -> None:
    """Add a trainable LoRA adapter to `transformer` (a diffusers model) and freeze everything else.

    With `init=True` (peft's default) B is zero, so the adapted model starts exactly at the base
    model: trained, old and reference policies coincide at step 0. `init="gaussian"` draws both
    matrices (the inline critic's LoRA baseline). `alpha` defaults to `rank`.
    """
    from peft import LoraConfig

    config = LoraConfig(
        r=rank,
        lora_alpha=rank if alpha is None else alpha,
        target_modules=list(targets),
        lora_dropout=dropout,
        init_lora_weights=init,
    )
    transformer.requires_grad_(False)
    try:
        transformer.add_adapter(config, adapter_name=adapter_name)
    except ValueError as err:
        raise ConfigError(f"LoRA targets {list(targets)} do not fit {type(transformer).__name__}: {err}") from None
    transformer.set_adapter(adapter_name)


def trainable_parameters(module: torch.nn.Module) -> tuple[list[str], list[torch.nn.Parameter]]:
    """(names, parameters) of `module` that require gradients, in registration order."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    return [n for n, _ in named], [p for _, p in named]


def lora_state_dict(transformer: torch.nn.Module, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """The adapter's weights with peft's adapter-free key names (`...to_q.lora_A.weight`)."""
    from peft.utils import get_peft_model_state_dict

    from torch.distributed.tensor import DTensor

    state = get_peft_model_state_dict(transformer, adapter_name=adapter_name)
    # full_tensor() is a collective: every process gathers every tensor, in the same (key) order
    state = {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in state.items()}
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def save_lora(
    transformer: torch.nn.Module,
    folder: str | Path,
    *,
    adapter_name: str = "default",
    dtype: torch.dtype | None = None,
    write: bool = True,
) -> Path:
    """Write the adapter as `folder/pytorch_lora_weights.safetensors` (diffusers' format); returns the file.

    Sharded transformers: every process calls this (the adapter is gathered), `write` only on the main one.
    """
    from diffusers.loaders.lora_pipeline import QwenImageLoraLoaderMixin

    peft_config = getattr(transformer, "peft_config", {}).get(adapter_name)
    if peft_config is None:
        raise ArtifactError(f"the transformer has no LoRA adapter {adapter_name!r} to save")
    state = lora_state_dict(transformer, adapter_name)
    folder = Path(folder)
    if not write:
        return folder / LORA_WEIGHT_NAME
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    metadata = peft_config.to_dict()
    metadata = {k: sorted(v) if isinstance(v, set) else v for k, v in metadata.items()}
    folder.mkdir(parents=True, exist_ok=True)
    QwenImageLoraLoaderMixin.save_lora_weights(
        folder, transformer_lora_layers=state, weight_name=LORA_WEIGHT_NAME, transformer_lora_adapter_metadata=metadata
    )
    return folder / LORA_WEIGHT_NAME


def load_lora(
    transformer: torch.nn.Module, folder: str | Path, *, adapter_name: str = "edit_r1", scale: float = 1.0
) -> None:
    """Load a LoRA written by `save_lora` (or any diffusers transformer LoRA) and activate it at `scale`.

    `adapter_name` defaults to "edit_r1", the name the Edit-R1 refiner and its users know the
    bundled adapter by; other trainers pass their own.
    """
    folder = Path(folder)
    file = folder / LORA_WEIGHT_NAME if folder.is_dir() else folder
    if not file.is_file():
        raise ArtifactError(f"no LoRA weights at {file}; train one (e.g. `refine train edit-r1`) or pass the folder holding {LORA_WEIGHT_NAME}")
    if adapter_name in getattr(transformer, "peft_config", {}):
        raise ArtifactError(f"the transformer already has an adapter named {adapter_name!r}; pick another adapter_name")
    try:
        transformer.load_lora_adapter(str(file), prefix="transformer", adapter_name=adapter_name)
    except (ValueError, RuntimeError, KeyError) as err:
        raise ArtifactError(f"{file}: does not fit this transformer ({str(err).splitlines()[0]})") from None
    if adapter_name not in getattr(transformer, "peft_config", {}):
        raise ArtifactError(f"{file}: holds no 'transformer.' LoRA weights for this model")
    transformer.set_adapters([adapter_name], weights=[scale])


def load_lora_into_editor(editor, folder: str | Path, *, adapter_name: str, scale: float = 1.0, refiner: str) -> None:
    """Load a LoRA into a white-box editor's backbone *in place*: the body of every LoRA refiner.

    `refiner` is the refiner's name, for the error when `editor` is not white-box (a LoRA needs
    the backbone's transformer).

    >>> load_lora_into_editor(object(), "runs/x/lora", adapter_name="x", refiner="edit_r1")
    Traceback (most recent call last):
    ...
    refine.errors.ConfigError: refiner 'edit_r1' needs a white-box FlowEditor (it loads a LoRA into the backbone), got object
    """
    if not is_white_box(editor):
        raise ConfigError(
            f"refiner {refiner!r} needs a white-box FlowEditor (it loads a LoRA into the backbone), got {type(editor).__name__}"
        )
    load_lora(editor.backbone.transformer, folder, adapter_name=adapter_name, scale=scale)
