"""The three-stage Inline Critic recipe and the paper's ablation baselines (`refine train inline-critic`).

Example (tiny; the real run is `refine train inline-critic --config examples/configs/inline_critic/shapes.yaml`):
    >>> from refine.inline_critic.config import InlineCriticConfig
    >>> from refine.inline_critic.train import plan_stages
    >>> plan_stages(InlineCriticConfig(method="three_stage"), "all")
    ['1', '2', '3']
    >>> plan_stages(InlineCriticConfig(method="learnable_token"), "all")
    ['token']
    >>> summary = train_inline_critic(InlineCriticConfig(output_dir="/tmp/ic"), backbone=backbone)  # doctest: +SKIP
    >>> summary["weights"]                                                                            # doctest: +SKIP
    '/tmp/ic/critic.safetensors'

The loop (`train_inline_critic`), top to bottom:
1. Setup: `accelerate` (device, mixed precision, processes), seeds, the backbone frozen
   throughout, critic modules with uniformly picked probe layers, the pair stream, validation pairs.
2. Plan: which stages run (`plan_stages`: method + `--stage`) and what each one trains (`STAGES`).
3. Each stage: attach the critic (token or not, masked or not), AdamW + cosine schedule over the
   stage's trainable group, resume from the stage's newest checkpoint
   (`output_dir/checkpoints/stage-N/`, `refine.training.checkpoint`), then steps: draw (x_0, noise, t),
   one backbone forward whose taps feed probes and projections, the stage's losses
   (`compute_losses`: eq. 3, eq. 7 or eq. 8), clip, step; metrics.jsonl; checkpoints.
   A resume whose config differs outside `RESUME_SAFE` is refused first (`refine.training.resume`).
4. Outputs: `stage{1,2,3}.safetensors` (training modules) after each stage, `critic.safetensors`
   (inference weights: the token only) at the end; `lora.safetensors` for the LoRA baseline, and the
   same adapter in diffusers' format as `lora/` (a compare entry `{kind: edit_r1, path: RUN/lora}`
   evaluates it, e.g. beside the critic for `refine.compare.difficulty`'s bins).

Stage table (paper Sec. 3.2; backbone frozen everywhere):
| stage | critic token | masked (eq. 5) | trainable                      | loss                          |
| 1     | absent       | -              | probes                         | L_probe (eq. 3)               |
| 2     | appended     | yes            | token, projections             | L_critic (eq. 7)              |
| 3     | appended     | no             | token, projections, probes     | L_gen + l_c L_critic + l_p L_probe |
| token | appended     | no             | token                          | L_gen  (ablation baseline)     |
| lora  | absent       | -              | LoRA adapters                  | L_gen  (ablation baseline)     |
`single_stage` runs stage 3 from freshly initialised modules.

This module imports torch inside its functions: the CLI imports it for `refine --help`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Sequence

import typer

from refine.errors import ArtifactError, ConfigError
from refine.inline_critic.config import InlineCriticConfig

if TYPE_CHECKING:
    import torch

    from refine.inline_critic.attach import CriticAttachment
    from refine.inline_critic.data import EditPair
    from refine.inline_critic.modules import InlineCriticModules


@dataclass(frozen=True)
class StageSpec:
    """What one stage appends, masks, trains and optimises (see the table in the module docstring)."""

    name: str
    config_key: str  # which StageConfig of InlineCriticConfig holds its optimisation settings
    token: bool
    hide_critic: bool
    trainable: tuple[str, ...]
    losses: tuple[str, ...]

    @property
    def needs_probes(self) -> bool:
        return "probe" in self.losses or "critic" in self.losses


STAGES: dict[str, StageSpec] = {
    "1": StageSpec("1", "stage1", token=False, hide_critic=False, trainable=("probes",), losses=("probe",)),
    "2": StageSpec("2", "stage2", token=True, hide_critic=True, trainable=("token", "projections"), losses=("critic",)),
    "3": StageSpec("3", "stage3", token=True, hide_critic=False, trainable=("token", "projections", "probes"), losses=("gen", "critic", "probe")),
    "token": StageSpec("token", "stage3", token=True, hide_critic=False, trainable=("token",), losses=("gen",)),
    "lora": StageSpec("lora", "stage3", token=False, hide_critic=False, trainable=("lora",), losses=("gen",)),
}


def plan_stages(config: InlineCriticConfig, stage: str = "all") -> list[str]:
    """The stage names to run for `config.method` and the CLI's `--stage` (1, 2, 3 or all)."""
    if stage not in ("1", "2", "3", "all"):
        raise ConfigError(f"--stage {stage!r}: use 1, 2, 3 or all")
    if config.method == "three_stage":
        return ["1", "2", "3"] if stage == "all" else [stage]
    if stage not in ("all", "3"):
        raise ConfigError(f"method {config.method!r} has a single stage; use --stage all (or 3), not {stage!r}")
    return {"single_stage": ["3"], "learnable_token": ["token"], "lora": ["lora"]}[config.method]


# ----------------------------------------------------------------------------------------------
# One step
# ----------------------------------------------------------------------------------------------


def encode_pairs(backbone, pairs: Sequence["EditPair"]):
    """(x_0 (B, N, C) packed target latents, condition without CFG negative) for a list of pairs."""
    import torch

    # Guidance-distilled models (FLUX.1 Kontext) embed the guidance value: train with the one they are
    # sampled with. CFG models (Qwen-Image-Edit, ShapeEdit) encode without the negative branch (1.0).
    distilled = getattr(backbone.transformer.config, "guidance_embeds", False)
    guidance = backbone.default_guidance if distilled else 1.0
    with torch.no_grad():  # the backbone (text encoder included) is frozen
        cond = backbone.encode_condition([p.source for p in pairs], [p.instruction for p in pairs], guidance=guidance)
        x0 = backbone.encode_images(backbone.prepare_images([p.target for p in pairs]))
    return x0.float(), cond


def compute_losses(
    backbone,
    attachment: "CriticAttachment",
    modules: "InlineCriticModules | None",
    x0: "torch.Tensor",
    cond,
    spec: StageSpec,
    config: InlineCriticConfig,
    generator: "torch.Generator",
) -> dict[str, "torch.Tensor"]:
    """The stage's losses for one batch; "loss" is the weighted total (eq. 3, 7 or 8).

    x_t = (1 - t) x_0 + t noise and the target velocity is noise - x_0 (refine.backbones.base).
    """
    import torch

    from refine.training.timesteps import sample_timesteps
    from refine.inline_critic.losses import critic_loss, critic_target, flow_matching_loss, model_output, model_target, per_position_error, probe_loss

    noise = torch.randn(x0.shape, generator=generator).to(x0.device)  # (B, N, C)
    t = sample_timesteps(x0.shape[0], generator, config.timestep_sampling).to(x0.device)  # (B,)
    x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * noise
    target = model_target(backbone, x0, noise)  # the velocity, or x0 for x0-predicting editors
    grad_through_backbone = spec.name == "lora" or (spec.token and ("gen" in spec.losses or "critic" in spec.losses))
    with torch.set_grad_enabled(grad_through_backbone):
        pred = model_output(backbone, backbone.velocity(x_t, t, cond), x_t, t)  # (B, N, C); the taps fill attachment.capture
    capture = attachment.capture
    losses: dict[str, torch.Tensor] = {}
    if "gen" in spec.losses:
        losses["gen"] = flow_matching_loss(pred, target)
    if spec.needs_probes:
        temb = attachment.temb
        with torch.set_grad_enabled("probes" in spec.trainable):
            probe_preds = [modules.probes[str(layer)](capture.noise_hidden[layer], temb) for layer in modules.probe_layers]
        if "probe" in spec.losses:
            losses["probe"] = probe_loss(probe_preds, target)
        if "critic" in spec.losses:
            targets = [critic_target(per_position_error(p, target), config.error_rescale, config.error_eps) for p in probe_preds]
            estimates = [
                modules.projections[str(layer)](capture.critic_hidden[layer], capture.noise_hidden[layer]) for layer in modules.probe_layers
            ]
            losses["critic"] = critic_loss(estimates, targets)
    weights = {"gen": 1.0, "probe": 1.0, "critic": 1.0}
    if spec.name == "3":  # eq. 8
        stage = config.stage3
        weights = {"gen": 1.0, "critic": stage.lambda_critic, "probe": stage.lambda_probe}
    losses["loss"] = sum(weights[name] * value for name, value in losses.items())
    return losses


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def validation_metrics(
    backbone,
    attachment: "CriticAttachment",
    modules: "InlineCriticModules | None",
    pairs: Sequence["EditPair"],
    config: InlineCriticConfig,
    *,
    seed: int = 0,
    batch_size: int = 16,
) -> dict[str, float]:
    """Held-out metrics with fixed (t, noise) per pair: flow-matching loss of the editor as attached,
    and, when the critic has projections, the Spearman of its error maps with the probes' (plus a
    shuffled-map control that should be ~0)."""
    import torch

    from refine.training.timesteps import sample_timesteps
    from refine.inline_critic.losses import flow_matching_loss, model_output, model_target, per_position_error
    from refine.inline_critic.stats import spearman_rows

    if not pairs:
        return {}
    generator = torch.Generator().manual_seed(seed)  # (t, noise): identical for every method and stage
    shuffler = torch.Generator().manual_seed(seed + 1)  # separate, so the control never shifts the noise
    flow, probe, rhos, shuffled = [], [], [], []
    with_probes = modules is not None and bool(attachment.layers)
    with_critic = with_probes and attachment.token is not None
    for start in range(0, len(pairs), batch_size):
        x0, cond = encode_pairs(backbone, pairs[start : start + batch_size])
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        t = sample_timesteps(x0.shape[0], generator, config.timestep_sampling).to(x0.device)
        x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * noise
        target = model_target(backbone, x0, noise)
        with torch.no_grad():
            pred = model_output(backbone, backbone.velocity(x_t, t, cond), x_t, t)
            flow.append(flow_matching_loss(pred, target).item() * x0.shape[0])
            if not with_probes:
                continue
            capture, temb = attachment.capture, attachment.temb
            for layer in attachment.layers:
                probe_pred = modules.probes[str(layer)](capture.noise_hidden[layer], temb)
                probe.append(flow_matching_loss(probe_pred, target).item() * x0.shape[0] / len(attachment.layers))
                if with_critic:
                    error = per_position_error(probe_pred, target)  # (B, N)
                    estimate = modules.projections[str(layer)](capture.critic_hidden[layer], capture.noise_hidden[layer])
                    rhos.extend(spearman_rows(estimate, error).tolist())
                    permutation = torch.randperm(error.shape[1], generator=shuffler)
                    shuffled.extend(spearman_rows(estimate, error[:, permutation]).tolist())
    metrics = {"val_flow_loss": sum(flow) / len(pairs)}
    if probe:
        metrics["val_probe_loss"] = sum(probe) / len(pairs)
    if rhos:
        metrics["val_critic_spearman"] = sum(rhos) / len(rhos)
        metrics["val_shuffled_spearman"] = sum(shuffled) / len(shuffled)
    return metrics


# ----------------------------------------------------------------------------------------------
# The recipe
# ----------------------------------------------------------------------------------------------


def _freeze(backbone) -> None:
    parameters = backbone.parameters() if hasattr(backbone, "parameters") else backbone.transformer.parameters()
    for parameter in parameters:
        parameter.requires_grad_(False)
    if hasattr(backbone, "eval"):
        backbone.eval()


def build_backbone(config: InlineCriticConfig):
    """The backbone named by `config.backbone` (registry category "backbone")."""
    from refine.registry import registry

    return registry.build("backbone", dict(config.backbone))


def build_modules(config: InlineCriticConfig, backbone) -> "InlineCriticModules":
    """Fresh critic modules sized for `backbone`, with `config.probe_layers` or uniform ones."""
    from refine.inline_critic.adapters import adapter_for
    from refine.inline_critic.modules import InlineCriticModules, uniform_probe_layers

    dims = adapter_for(backbone.transformer).dims(backbone.transformer)
    layers = config.probe_layers if config.probe_layers is not None else uniform_probe_layers(dims.num_layers, config.num_probes)
    return InlineCriticModules(
        dims,
        layers,
        probe_mlp_dim=config.probe_mlp_dim,
        proj_dim=config.proj_dim,
        proj_mlp_dim=config.proj_mlp_dim,
        token_init_std=config.token_init_std,
    )


def weights_metadata(config: InlineCriticConfig, backbone, modules: "InlineCriticModules", **extra: Any) -> dict[str, Any]:
    dims = modules.dims
    return {
        "backbone": getattr(backbone, "name", type(backbone).__name__),
        "text_dim": dims.text_dim,
        "hidden_dim": dims.hidden_dim,
        "num_layers": dims.num_layers,
        "probe_layers": json.dumps(modules.probe_layers),
        "method": config.method,
        **extra,
    }


def add_lora(backbone, config: InlineCriticConfig) -> None:
    """The LoRA baseline's adapters on the transformer's attention projections (`refine.training.lora`).

    Gaussian init (both matrices drawn), as the baseline has always been trained.
    """
    from refine.training.lora import add_lora as add_adapter

    settings = config.lora
    add_adapter(backbone.transformer, rank=settings.rank, alpha=settings.alpha, targets=settings.target_modules, init="gaussian")


def _trainable(spec: StageSpec, modules, backbone) -> list:
    params = []
    for group in spec.trainable:
        if group == "lora":
            params += [p for name, p in backbone.transformer.named_parameters() if "lora_" in name]
        else:
            params += modules.group(group)
    for parameter in params:
        parameter.requires_grad_(True)
    return params


def _module_state(spec: StageSpec, modules, backbone) -> dict:
    if spec.name == "lora":
        from refine.training.lora import lora_state_dict

        return lora_state_dict(backbone.transformer)
    return modules.state_dict()


def _load_module_state(spec: StageSpec, modules, backbone, state: dict) -> None:
    if spec.name == "lora":
        from peft.utils import set_peft_model_state_dict

        set_peft_model_state_dict(backbone.transformer, state)
    else:
        modules.load_state_dict(state)


_STAGE_INDEX = {"1": 0, "2": 1, "3": 2, "token": 2, "lora": 2}  # baselines see stage 3's data stream


def _step_seed(seed: int, stage: str, step: int, process: int) -> int:
    """A stable per-step seed (Python's hash() of strings changes between processes)."""
    return (seed * 1_000_003 + _STAGE_INDEX[stage] * 100_003 + step * 101 + process) % 2**31


def stage_path(output_dir: str | Path, stage: str) -> Path:
    """Where the training modules after `stage` are saved: stage1.safetensors ... stage-token.safetensors."""
    return Path(output_dir) / (f"stage{stage}.safetensors" if stage.isdigit() else f"stage-{stage}.safetensors")


def checkpoint_root(output_dir: str | Path, stage: str) -> Path:
    """Where the checkpoints of `stage` go: output_dir/checkpoints/stage-1/checkpoint-000100/ ..."""
    return Path(output_dir) / "checkpoints" / f"stage-{stage}"


RESUME_SAFE: tuple[str, ...] = ("output_dir", "resume", "progress", "log_every", "wandb_project", "eval_every", "save_every", "stage1.steps", "stage2.steps", "stage3.steps")
"""Config fields a resumed run may change (a stage's steps: upward, the cosine schedule stretches to
the new length); so may every setting of a stage that has not started. Anything else is refused."""


def _check_resume(config: InlineCriticConfig, output_dir: Path, is_main: bool) -> None:
    """Refuse a resume whose config differs from the saved run outside the safe fields (one line)."""
    from refine.training.checkpoint import latest_checkpoint
    from refine.training.resume import SAVED, check_resume_config

    started = {key for key, spec in STAGES.items() if stage_path(output_dir, key).is_file() or latest_checkpoint(checkpoint_root(output_dir, key))}
    if not (config.resume and started):
        if is_main:
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / SAVED).write_text(config.to_yaml())  # what `refine critic analyze RUN` reads back
        return
    untouched = {STAGES[key].config_key for key in STAGES} - {STAGES[key].config_key for key in started}
    check_resume_config(output_dir, config, safe=[*RESUME_SAFE, *(f"{key}.*" for key in sorted(untouched))], write=is_main)


def train_inline_critic(config: InlineCriticConfig, *, stage: str = "all", backbone=None) -> dict[str, Any]:
    """Run the stages of `config.method` (see the module docstring); returns a summary with
    per-stage metrics and the paths written. `backbone` overrides `config.backbone` (tests, notebooks)."""
    import torch
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    from refine.inline_critic.attach import attach_critic
    from refine.inline_critic.data import batches, edit_pair_stream, validation_pairs
    from refine.inline_critic.weights import load_modules, save_critic_weights, save_modules
    from refine.training import checkpoint as ckpt
    from refine.training.accelerate_setup import make_accelerator, set_seed
    from refine.training.metrics import MetricsLogger

    # 1. Setup (a resume with a changed config is refused before anything is built).
    stages = plan_stages(config, stage)
    accelerator = make_accelerator(config.mixed_precision)
    is_main = accelerator.is_main_process
    output_dir = Path(config.output_dir)
    _check_resume(config, output_dir, is_main)
    set_seed(config.seed)
    backbone = backbone if backbone is not None else build_backbone(config)
    if hasattr(backbone, "to"):
        backbone.to(accelerator.device)
    _freeze(backbone)
    modules = build_modules(config, backbone).to(accelerator.device)
    modules.requires_grad_(False)
    if config.method == "lora":
        add_lora(backbone, config)
    val_pairs = validation_pairs(config.data)
    metrics_log = MetricsLogger(output_dir, enabled=is_main, step_key="step", wandb_project=config.wandb_project,
                                run_config=config.model_dump(mode="json"))
    summary: dict[str, Any] = {"method": config.method, "stages": {}, "output_dir": str(output_dir)}

    with attach_critic(backbone.transformer, layers=()) as plain:  # the frozen backbone, for reference
        summary["backbone"] = validation_metrics(backbone, plain, None, val_pairs, config, seed=config.data.validation_seed)
    metrics_log.write({"stage": "backbone", "step": 0, **summary["backbone"]})

    # Stages after the first of a three-stage run start from the previous stage's modules.
    first = stages[0]
    if config.method == "three_stage" and first in ("2", "3"):
        state, _ = load_modules(stage_path(output_dir, str(int(first) - 1)))
        modules.load_state_dict(state)

    for name in stages:
        spec = STAGES[name]
        stage_cfg = getattr(config, spec.config_key)
        stage_file = stage_path(output_dir, name)
        if config.resume and stage_file.is_file():
            state, meta = load_modules(stage_file)
            if meta.get("method") == config.method:
                _load_module_state(spec, modules, backbone, state)
                summary["stages"][name] = {"skipped": "already trained (resume)"}
                continue

        # 2. Trainable set, optimiser, schedule; resume within the stage.
        modules.requires_grad_(False)
        params = _trainable(spec, modules, backbone)
        optimizer = torch.optim.AdamW(params, lr=stage_cfg.lr, weight_decay=stage_cfg.weight_decay)
        scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=stage_cfg.warmup_steps, num_training_steps=max(stage_cfg.steps, 1))
        optimizer = accelerator.prepare(optimizer)
        start = 0
        root = checkpoint_root(output_dir, name)
        checkpoint = ckpt.latest_checkpoint(root) if config.resume else None
        if checkpoint is not None:
            info = ckpt.read_json(checkpoint, "state")
            if info["step"] > stage_cfg.steps:
                raise ConfigError(
                    f"{spec.config_key}.steps={stage_cfg.steps} but stage {name} of the run in {output_dir} has already done "
                    f"{info['step']}; set it to {info['step']} or more, or pick a new output_dir"
                )
            _load_module_state(spec, modules, backbone, ckpt.read_tensors(checkpoint, "modules"))
            optimizer.load_state_dict(ckpt.read_torch(checkpoint, "optimizer"))
            scheduler.load_state_dict(ckpt.read_torch(checkpoint, "scheduler"))
            ckpt.set_rng_state(ckpt.read_torch(checkpoint, f"rng-rank{accelerator.process_index}"))
            start = int(info["step"])
            accelerator.print(f"stage {name}: resumed at step {start}")
        # A resumed stage re-logs what came after its checkpoint.
        metrics_log.drop(lambda row, start=start, name=name: row.get("stage") == name and (row.get("step", 0) > start or "event" in row))

        # 3. Steps.
        # Each process reads its own stream (seeded by stage and rank); a resume skips what was consumed.
        data_seed = config.data.seed + 7919 * _STAGE_INDEX[name] + 104_729 * accelerator.process_index
        stream = batches(
            islice(edit_pair_stream(config.data.model_copy(update={"seed": data_seed})), start * config.batch_size * config.grad_accum, None),
            config.batch_size,
        )
        token = modules.critic_token if spec.token else None
        layers = modules.probe_layers if spec.needs_probes else ()
        record: dict[str, Any] = {}
        with attach_critic(backbone.transformer, token=token, layers=layers, hide_critic=spec.hide_critic) as attachment:

            def save_checkpoint_now(step: int) -> None:
                barrier = accelerator.wait_for_everyone
                with ckpt.CheckpointWriter(root, step, is_main=is_main, barrier=barrier, keep_last=1) as writer:
                    writer.save_torch(f"rng-rank{accelerator.process_index}", ckpt.rng_state(), every_rank=True)
                    writer.save_tensors("modules", _module_state(spec, modules, backbone))
                    writer.save_torch("optimizer", optimizer.state_dict())
                    writer.save_torch("scheduler", scheduler.state_dict())
                    writer.save_json("state", {"method": config.method, "stage": name, "step": step})

            initial = validation_metrics(backbone, attachment, modules, val_pairs, config, seed=config.data.validation_seed)
            metrics_log.write({"stage": name, "step": start, "event": "stage_start", **initial})
            bar = tqdm(total=stage_cfg.steps, initial=start, desc=f"inline critic stage {name}",
                       disable=not (config.progress and is_main), mininterval=2, dynamic_ncols=True)
            window: dict[str, list[float]] = {}
            started = time.perf_counter()
            for step in range(start, stage_cfg.steps):
                generator = torch.Generator().manual_seed(_step_seed(config.seed, name, step, accelerator.process_index))
                for _ in range(config.grad_accum):
                    x0, cond = encode_pairs(backbone, next(stream))
                    with accelerator.autocast():
                        losses = compute_losses(backbone, attachment, modules, x0.to(accelerator.device), cond, spec, config, generator)
                    accelerator.backward(losses["loss"] / config.grad_accum)
                    for key, value in losses.items():
                        window.setdefault(key, []).append(float(value.detach()))
                if accelerator.num_processes > 1:  # modules are not DDP-wrapped (never called as a whole): sync by hand
                    for parameter in params:
                        if parameter.grad is not None:
                            parameter.grad = accelerator.reduce(parameter.grad, "mean")
                accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                bar.update(1)
                done = step + 1
                if done % config.log_every == 0 or done == stage_cfg.steps:
                    record = {"stage": name, "step": done, "lr": scheduler.get_last_lr()[0],
                              "seconds_per_step": (time.perf_counter() - started) / (done - start),
                              **{key: sum(v) / len(v) for key, v in window.items()}}
                    window = {}
                    if config.eval_every and done % config.eval_every == 0 and done != stage_cfg.steps:
                        record.update(validation_metrics(backbone, attachment, modules, val_pairs, config, seed=config.data.validation_seed))
                    metrics_log.write(record)
                    bar.set_postfix(loss=f"{record.get('loss', float('nan')):.4f}")
                if done % config.save_every == 0 and done != stage_cfg.steps:
                    save_checkpoint_now(done)
            bar.close()

            # Validation at the stage end, as inference would run it (stage 2's critic is masked,
            # so its flow loss is the backbone's; its interest is the critic's Spearman).
            final = {"stage": name, "step": stage_cfg.steps, **record, **{f"start_{k}": v for k, v in initial.items()}}
            final.update(validation_metrics(backbone, attachment, modules, val_pairs, config, seed=config.data.validation_seed))
        metrics_log.write({**final, "event": "stage_end"})
        summary["stages"][name] = final
        if is_main:
            save_modules(stage_file, _module_state(spec, modules, backbone),
                         weights_metadata(config, backbone, modules, stage=name, steps=stage_cfg.steps))
        save_checkpoint_now(stage_cfg.steps)

    # 4. Inference weights.
    if is_main and stages[-1] in ("3", "token"):
        path = save_critic_weights(output_dir / "critic.safetensors", modules.critic_token,
                                   weights_metadata(config, backbone, modules))
        summary["weights"] = str(path)
    if is_main and stages[-1] == "lora":
        summary["weights"] = str(save_modules(output_dir / "lora.safetensors", _module_state(STAGES["lora"], modules, backbone),
                                              weights_metadata(config, backbone, modules, lora_rank=config.lora.rank)))
        from refine.training.lora import save_lora

        summary["lora_folder"] = str(save_lora(backbone.transformer, output_dir / "lora").parent)  # what LoRA refiners load
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n") if is_main else None
    accelerator.wait_for_everyone()
    summary["modules"] = modules
    return summary


def cli(
    config: str = typer.Option(..., "--config", "-c", help="YAML config or preset name (e.g. inline_critic/shapes = examples/configs/inline_critic/shapes.yaml)."),
    stage: str = typer.Option("all", "--stage", help="Stage to run: 1, 2, 3 or all (baselines: all)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides, e.g. stage1.steps=50."),
) -> None:
    """Train the inline critic: probes (1), masked critic (2), unmasked joint training (3), or a baseline."""
    from refine.config import load_config
    from refine.paths import check_output_dir
    from refine.presets import find_preset

    cfg = load_config(InlineCriticConfig, find_preset(config), overrides or [])
    check_output_dir(cfg.output_dir, "output_dir")  # before any compute
    summary = train_inline_critic(cfg, stage=stage)
    summary.pop("modules", None)
    typer.echo(json.dumps({k: v for k, v in summary.items() if k != "stages"}, indent=2))
    for name, metrics in summary["stages"].items():
        shown = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in metrics.items() if k not in ("stage",)}
        typer.echo(f"stage {name}: {shown}")
    if "weights" not in summary and stage not in ("1", "2"):
        raise ArtifactError(f"no weights were written to {cfg.output_dir}")
