"""Memory per GPU of an RL fine-tuning run, from parameter counts of the real model configs.

Example:
    >>> from refine.training.memory_plan import MemoryPlanInput, plan_memory
    >>> plan = plan_memory(MemoryPlanInput(model="qwen_image_edit_2509", finetune="lora", gpus=8, resolution=512))
    >>> round(plan.params["transformer"] / 1e9, 1), plan.fits
    (20.4, True)
    >>> print(plan.table().splitlines()[0])
    | item | GiB per GPU | how |

Parameter counts come from instantiating each component's real configuration on the meta
device (no weights, no memory): diffusers' `QwenImageTransformer2DModel` and
`FluxTransformer2DModel` with their default arguments, which are the published Qwen-Image and
FLUX.1 configs (60 double-stream blocks; 19 double + 38 single), and the text encoders and VAEs
with the hyperparameters of their published `config.json` files (Qwen2.5-VL-7B-Instruct for
Qwen-Image-Edit; T5-v1.1-XXL encoder and CLIP-L for FLUX.1 Kontext). What the counts say:
Qwen-Image-Edit-2509 20.43B (transformer) + 8.29B (text encoder) + 0.13B (VAE); FLUX.1 Kontext
11.90B + 4.76B (T5) + 0.12B (CLIP) + 0.08B (VAE).

The arithmetic, per GPU, with N = gpus and bf16 weights (2 bytes a parameter):
* frozen weights: 2 P bytes, divided by N when FSDP2 shards them (text encoder: sharded or kept
  whole on every rank, `shard_text_encoder`; the VAE is small and kept whole);
* trainable parameters (LoRA adapters, or the whole transformer): fp32 master copy (4), gradient
  (4) and Adam's two moments (8): 16 bytes a trainable parameter, divided by N under FSDP2;
* shadows: the old policy and the EMA (Edit-R1 / MT-EditFlow), one fp32 copy each of the trainable
  parameters, divided by N under FSDP2 (each rank keeps its own shard of each shadow);
* activations of the training forward (the part FSDP does not divide): per block and sample,
  34 s h bytes in bf16 with flash attention (Korthikanti et al. 2022, "Reducing Activation
  Recomputation in Large Transformer Models", the s^2 term vanishes with flash attention), for s
  tokens (target + source image tokens + text tokens) and width h. With activation checkpointing
  per block, 2 s h bytes a block (its input) plus one block's 34 s h recomputed at a time. CFG-
  consistent NFT (both branches through the LoRA) doubles it;
* FSDP2's all-gather buffers: the unsharded bf16 weights of two blocks at a time (the one running
  and the one prefetched);
* a margin for the CUDA context, allocator fragmentation and rollout buffers (`overhead_gib`).
The largest micro-batch that fits is what is left after everything but activations, divided by
one sample's activations. Group size itself is not bound by memory: rollouts run in chunks of
`rollout.max_batch`, and the judge runs on its own servers (vLLM), not on the training GPUs.
These are estimates to plan a launch, not measurements; Edit-R1's reference setup (6 nodes x 8
A100-80GB for Qwen-Image-Edit, FSDP for the text encoder, gradient checkpointing) is the anchor
the docs compare against (docs/scaling.md).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from refine.config import RefineConfig
from refine.errors import ConfigError

GIB = 1024**3
ACTIVATION_BYTES_PER_TOKEN_WIDTH = 34  # bf16, flash attention: Korthikanti et al. (2022), Eq. 2 without the s^2 term
CHECKPOINTED_BYTES_PER_TOKEN_WIDTH = 2  # the block's bf16 input kept for the recomputation

MODELS = ("qwen_image_edit_2509", "flux_kontext")


class MemoryPlanInput(RefineConfig):
    """What the estimate needs; `refine train ... --dry-run` fills it from a trainer's resolved config."""

    model: Literal["qwen_image_edit_2509", "flux_kontext"] = Field(..., description="Which real model's configs to count.")
    finetune: Literal["lora", "full"] = Field("lora", description="LoRA adapters on the attention projections, or the whole transformer.")
    lora_rank: int = Field(64, ge=1, description="LoRA rank (finetune=lora).")
    gpus: int = Field(8, ge=1, description="Processes (GPUs) that share the run.")
    gpu_gib: float = Field(80.0, gt=0, description="Memory of one GPU in GiB.")
    resolution: int = Field(512, ge=64, description="Training image side in pixels (target and source each).")
    micro_batch: int = Field(1, ge=1, description="Samples per training forward on one GPU.")
    text_tokens: int = Field(256, ge=1, description="Prompt tokens the transformer attends to (the VL encoder's image tokens included).")
    fsdp: bool = Field(True, description="FSDP2 shards weights, gradients, optimizer state and shadows over the GPUs.")
    shard_text_encoder: bool = Field(True, description="Shard the frozen text encoder too (else a whole copy on every rank).")
    activation_checkpointing: bool = Field(True, description="Recompute each block's activations in the backward pass.")
    shadows: int = Field(2, ge=0, description="Shadow copies of the trainable parameters (old policy + EMA = 2).")
    cfg_branches: int = Field(1, ge=1, le=2, description="Branches with gradients per sample: 2 for CFG-consistent NFT.")
    overhead_gib: float = Field(6.0, ge=0, description="CUDA context, allocator fragmentation, rollout buffers.")


@dataclass(frozen=True)
class ModelShape:
    """What the activation arithmetic needs from a transformer: width, blocks and the latent grid."""

    width: int
    blocks: int
    pixels_per_token: int  # image side pixels per token side: VAE factor x patch size


SHAPES = {
    "qwen_image_edit_2509": ModelShape(width=24 * 128, blocks=60, pixels_per_token=8 * 2),
    "flux_kontext": ModelShape(width=24 * 128, blocks=19 + 38, pixels_per_token=8 * 2),
}
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


@dataclass
class MemoryPlan:
    """The estimate: parameter counts, GiB per GPU by item, and the largest micro-batch that fits."""

    inputs: MemoryPlanInput
    params: dict[str, int]
    trainable: int
    rows: list[tuple[str, float, str]] = field(default_factory=list)
    activation_gib_per_sample: float = 0.0
    max_micro_batch: int = 0

    @property
    def total_gib(self) -> float:
        return sum(gib for _, gib, _ in self.rows)

    @property
    def fits(self) -> bool:
        return self.total_gib <= self.inputs.gpu_gib

    def table(self) -> str:
        lines = ["| item | GiB per GPU | how |", "|---|---|---|"]
        lines += [f"| {name} | {gib:.1f} | {how} |" for name, gib, how in self.rows]
        verdict = "fits" if self.fits else "does NOT fit"
        lines.append(f"| **total** | **{self.total_gib:.1f}** | {verdict} in {self.inputs.gpu_gib:.0f} GiB |")
        return "\n".join(lines)

    def summary(self) -> str:
        i = self.inputs
        counts = ", ".join(f"{name} {n / 1e9:.2f}B" for name, n in self.params.items())
        return (
            f"{i.model}, {i.finetune}{f' rank {i.lora_rank}' if i.finetune == 'lora' else ''}, {i.gpus} GPUs x "
            f"{i.gpu_gib:.0f} GiB, {i.resolution}px, micro-batch {i.micro_batch}, FSDP2 {'on' if i.fsdp else 'off'}, "
            f"activation checkpointing {'on' if i.activation_checkpointing else 'off'}\n"
            f"parameters: {counts}; trainable {self.trainable / 1e6:.1f}M\n{self.table()}\n"
            f"activations per sample {self.activation_gib_per_sample:.2f} GiB; largest micro-batch that fits: "
            f"{self.max_micro_batch}"
        )


@functools.lru_cache(maxsize=None)
def count_parameters(model: str, lora_rank: int = 64) -> tuple[dict[str, int], int]:
    """({component: parameters}, LoRA parameters at `lora_rank`) from meta-device instantiation."""
    import torch

    from refine._compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r} for the memory plan; choose one of {', '.join(MODELS)}")
    with torch.device("meta"):
        components = _build_components(model)
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in components.items()}
    lora = sum(
        lora_rank * (m.in_features + m.out_features)
        for name, m in components["transformer"].named_modules()
        if isinstance(m, torch.nn.Linear) and name.endswith(LORA_TARGETS)
    )
    return counts, lora


def _build_components(model: str) -> dict:
    """The real configurations, built on the (meta) device in force: sources in the module docstring."""
    from diffusers import AutoencoderKL, AutoencoderKLQwenImage, FluxTransformer2DModel, QwenImageTransformer2DModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        T5Config,
        T5EncoderModel,
    )

    if model == "qwen_image_edit_2509":
        text = Qwen2_5_VLConfig(
            text_config=dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                             intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False),
            vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                               patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                               fullatt_block_indexes=[7, 15, 23, 31]),
        )
        return {
            "transformer": QwenImageTransformer2DModel(),  # diffusers' defaults are Qwen-Image's published config
            "text_encoder": Qwen2_5_VLForConditionalGeneration(text),
            "vae": AutoencoderKLQwenImage(),
        }
    t5 = T5Config(d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64, vocab_size=32128,
                  feed_forward_proj="gated-gelu", is_encoder_decoder=False)
    clip = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                          vocab_size=49408, projection_dim=768)
    return {
        "transformer": FluxTransformer2DModel(guidance_embeds=True),  # FLUX.1 [dev] / Kontext: guidance-distilled
        "text_encoder": T5EncoderModel(t5),
        "text_encoder_2": CLIPTextModel(clip),
        "vae": AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                             up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512],
                             layers_per_block=2, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False),
    }


def plan_memory(inputs: MemoryPlanInput) -> MemoryPlan:
    """Memory per GPU for `inputs` (the arithmetic is in the module docstring)."""
    params, lora = count_parameters(inputs.model, inputs.lora_rank)
    shape = SHAPES[inputs.model]
    n = inputs.gpus if inputs.fsdp else 1
    trainable = lora if inputs.finetune == "lora" else params["transformer"]
    plan = MemoryPlan(inputs, params, trainable)
    shard = f"/ {inputs.gpus} (FSDP2)" if inputs.fsdp else "(replicated)"

    plan.rows.append(("transformer weights (bf16)", 2 * params["transformer"] / n / GIB, f"2 B x {params['transformer'] / 1e9:.2f}B {shard}"))
    text = sum(v for k, v in params.items() if k.startswith("text_encoder"))
    text_n = n if inputs.shard_text_encoder else 1
    plan.rows.append(("text encoder(s) (bf16, frozen)", 2 * text / text_n / GIB,
                      f"2 B x {text / 1e9:.2f}B {shard if inputs.shard_text_encoder else '(whole on every rank)'}"))
    plan.rows.append(("VAE (bf16, frozen)", 2 * params["vae"] / GIB, "whole on every rank"))
    plan.rows.append(("trainable: fp32 master + grad + Adam", 16 * trainable / n / GIB, f"16 B x {trainable / 1e6:.1f}M {shard}"))
    plan.rows.append(("shadows: old policy + EMA (fp32)", 4 * inputs.shadows * trainable / n / GIB,
                      f"{inputs.shadows} x 4 B x {trainable / 1e6:.1f}M {shard}"))

    image_tokens = (inputs.resolution // shape.pixels_per_token) ** 2
    tokens = 2 * image_tokens + inputs.text_tokens  # target + source image tokens + text
    block = ACTIVATION_BYTES_PER_TOKEN_WIDTH * tokens * shape.width
    if inputs.activation_checkpointing:
        per_sample = CHECKPOINTED_BYTES_PER_TOKEN_WIDTH * tokens * shape.width * shape.blocks + block
        how = f"(2 x {shape.blocks} blocks + 34) s h, s={tokens}, h={shape.width}"
    else:
        per_sample = block * shape.blocks
        how = f"34 s h x {shape.blocks} blocks, s={tokens}, h={shape.width}"
    per_sample *= inputs.cfg_branches
    plan.activation_gib_per_sample = per_sample / GIB
    plan.rows.append((f"activations x micro-batch {inputs.micro_batch}", inputs.micro_batch * per_sample / GIB,
                      how + (" x 2 CFG branches" if inputs.cfg_branches == 2 else "")))
    if inputs.fsdp and inputs.gpus > 1:
        block_params = params["transformer"] / shape.blocks
        plan.rows.append(("FSDP2 all-gather buffers", 2 * 2 * block_params / GIB, "2 blocks x 2 B x unsharded block weights"))
    plan.rows.append(("CUDA context, fragmentation, rollout buffers", inputs.overhead_gib, "margin"))

    fixed = plan.total_gib - inputs.micro_batch * plan.activation_gib_per_sample
    plan.max_micro_batch = max(0, math.floor((inputs.gpu_gib - fixed) / plan.activation_gib_per_sample))
    return plan


BACKBONE_MODELS = {"qwen_image_edit": "qwen_image_edit_2509", "flux_kontext": "flux_kontext"}


def plan_input_for(backbone: dict, *, finetune: str, lora_rank: int, micro_batch: int, gpus: int, gpu_gib: float,
                   cfg_branches: int = 1) -> MemoryPlanInput | None:
    """The plan's input for a trainer's resolved backbone spec; None for backbones too small to plan (shapes).

    >>> plan_input_for({"kind": "qwen_image_edit", "pixel_area": 1024 * 1024}, finetune="lora", lora_rank=32,
    ...                micro_batch=3, gpus=48, gpu_gib=80).resolution
    1024
    >>> plan_input_for({"kind": "shapes"}, finetune="lora", lora_rank=8, micro_batch=16, gpus=1, gpu_gib=80) is None
    True
    """
    model = BACKBONE_MODELS.get(str(backbone.get("kind")))
    if model is None:
        return None
    area = backbone.get("pixel_area") or 1024 * 1024  # both pipelines' default working area
    return MemoryPlanInput(model=model, finetune=finetune, lora_rank=lora_rank, micro_batch=micro_batch, gpus=gpus,
                           gpu_gib=gpu_gib, resolution=int(round(math.sqrt(area))), cfg_branches=cfg_branches,
                           text_tokens=256 if model == "qwen_image_edit_2509" else 512)


def dry_run_report(backbone: dict, **kwargs) -> str:
    """What `refine train ... --dry-run` prints: the plan, or why there is none (nothing is loaded)."""
    inputs = plan_input_for(backbone, **kwargs)
    if inputs is None:
        return (f"no memory plan for backbone kind {backbone.get('kind')!r}: plans exist for "
                f"{', '.join(BACKBONE_MODELS)} (ShapeEdit's editor has 2.5M parameters and fits anywhere)")
    return plan_memory(inputs).summary()
