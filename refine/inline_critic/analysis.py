"""The paper's analyses: the probing study (Fig. 1) and the three alignment experiments (Sec. 4.4, Fig. 4).

Example (the map of experiment A from two blocks' received-score maps; a trained run is analysed
with `refine critic analyze RUN`, or `run_analysis` from Python):
    >>> import torch
    >>> from refine.inline_critic.analysis import attention_shift
    >>> attention_shift(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.0, 3.0, 2.0]])).round(decimals=2)
    tensor([[0., 1., 1.]])
    >>> from refine.inline_critic.analysis import run_analysis                   # doctest: +SKIP
    >>> report = run_analysis(config, "runs/inline_critic-shapes", "runs/inline_critic-shapes/analysis")  # doctest: +SKIP
    >>> report["summary"]["experiment_b"]["median"]                              # doctest: +SKIP

Every number is a Spearman rank correlation between two spatial maps over the N noise tokens of
one held-out case (`refine.inline_critic.stats.spearman_rows`), summarised over cases by median,
mean, share > 0 and a 95% bootstrap interval of the mean.

Probing study (uses the stage-1 probes on the frozen backbone, no critic): for each probe layer l
and each denoising step t of a `steps`-step schedule, rho(E_l, E_final) where E_l is probe l's
per-position squared error and E_final the backbone output's (errors are measured in the space the
backbone predicts in: the velocity, or x0 for ShapeEdit's x0-predicting editor; see losses.py). The paper's claim: rho is
already high in early layers although the probes' own loss only gets close to the final one late.

Alignment experiments (use the trained critic: token, projections and probes after stage 3; the
critic's predicted map e_hat_l is read at probe layer l of the unmasked run; t = `t_analysis`):
* A, attention redistribution: S_k(i) = sum over all queries of the pre-softmax score that noise
  token i receives as a key at block k (recorded by the critic processor, summed over heads).
  Delta_A(i) = |z(S_{l+1})(i) - z(S_l)(i)| (z: standardised over positions so the two blocks'
  scales do not matter): how much the attention a position attracts changes right after the layer
  where the critic judged it. rho(e_hat_l, Delta_A).
* B, generation-behaviour update: Delta_B = E_l - E_l' for consecutive probe layers l < l' (how
  much the error of the encoded prediction drops between them). rho(e_hat_l, Delta_B).
* C, causal shift: the same case run unmasked (u) and with the critic masked (m, eq. 5):
  Delta_C = (E^u_l - E^u_l') - (E^m_l - E^m_l'): the part of the layer-to-layer update that exists
  only because the other tokens can see the critic. rho(e_hat_l, Delta_C).
The paper's equations 9-12 are not legible in our copy of the text; these definitions follow its
prose and are stated here so the numbers can be checked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

from refine.errors import ArtifactError
from refine.inline_critic.attach import attach_critic
from refine.inline_critic.config import InlineCriticConfig
from refine.inline_critic.losses import model_output, model_target, per_position_error
from refine.inline_critic.modules import InlineCriticModules
from refine.inline_critic.stats import spearman_rows, summarize


def _noised(backbone, x0: torch.Tensor, t: float, generator: torch.Generator):
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    x_t = (1 - t) * x0 + t * noise  # refine.backbones.base convention
    return x_t, model_target(backbone, x0, noise)


@torch.no_grad()
def probing_study(backbone, modules: InlineCriticModules, pairs: Sequence[Any], *, steps: int = 8, seed: int = 0, batch_size: int = 16) -> dict[str, Any]:
    """rho(E_l, E_final) and probe losses per probe layer and step (frozen backbone, no critic)."""
    from refine.inline_critic.train import encode_pairs

    layers = modules.probe_layers
    first_x0, first_cond = encode_pairs(backbone, pairs[:batch_size])
    times = [float(t) for t in backbone.sigmas(steps, first_cond)[:-1]]  # (steps,) the sampler's grid, t = 0 excluded
    rho = {layer: [[] for _ in times] for layer in layers}
    loss = {layer: [0.0 for _ in times] for layer in layers}
    final_loss = [0.0 for _ in times]
    generator = torch.Generator().manual_seed(seed)
    with attach_critic(backbone.transformer, layers=layers) as taps:
        for start in range(0, len(pairs), batch_size):
            x0, cond = (first_x0, first_cond) if start == 0 else encode_pairs(backbone, pairs[start : start + batch_size])
            for k, t in enumerate(times):
                x_t, target = _noised(backbone, x0, t, generator)
                t_ = torch.full((len(x0),), t)
                final_error = per_position_error(model_output(backbone, backbone.velocity(x_t, t_, cond), x_t, t_), target)  # (B, N)
                final_loss[k] += float(final_error.mean(dim=1).sum())
                for layer in layers:
                    error = per_position_error(modules.probes[str(layer)](taps.capture.noise_hidden[layer], taps.temb), target)
                    rho[layer][k].extend(spearman_rows(error, final_error).tolist())
                    loss[layer][k] += float(error.mean(dim=1).sum())
    n = len(pairs)
    return {
        "times": times,
        "layers": layers,
        "num_layers": modules.dims.num_layers,
        "spearman": {str(l): [sum(v) / len(v) for v in rho[l]] for l in layers},
        "spearman_by_layer": {str(l): summarize([x for v in rho[l] for x in v]) for l in layers},
        "probe_loss": {str(l): [v / n for v in loss[l]] for l in layers},
        "final_loss": [v / n for v in final_loss],
    }


def _critic_pass(backbone, attachment, modules, x_t, t, cond, target, hide: bool) -> dict[str, Any]:
    attachment.hide_critic = hide
    with attachment.scores() as scores:
        backbone.velocity(x_t, torch.full((len(x_t),), t), cond)
    capture, temb = attachment.capture, attachment.temb
    n = capture.num_noise
    errors = {l: per_position_error(modules.probes[str(l)](capture.noise_hidden[l], temb), target) for l in modules.probe_layers}
    estimates = {l: modules.projections[str(l)](capture.critic_hidden[l], capture.noise_hidden[l]) for l in modules.probe_layers}
    return {"errors": errors, "estimates": estimates, "scores": {k: v[:, :n] for k, v in scores.items()}}


def _z(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean(dim=-1, keepdim=True)) / x.std(dim=-1, keepdim=True).clamp_min(1e-8)


def attention_shift(scores_before: torch.Tensor, scores_after: torch.Tensor) -> torch.Tensor:
    """Experiment A's map: |z(S_after) - z(S_before)| per position, (B, N) each -> (B, N)."""
    return (_z(scores_after) - _z(scores_before)).abs()


@torch.no_grad()
def alignment_experiments(
    backbone, modules: InlineCriticModules, pairs: Sequence[Any], *, t_analysis: float = 0.5, seed: int = 0, batch_size: int = 16
) -> dict[str, Any]:
    """Per-case Spearman values of experiments A, B and C (definitions in the module docstring)."""
    from refine.inline_critic.train import encode_pairs

    layers = modules.probe_layers
    if len(layers) < 2:
        raise ArtifactError("experiments B and C need at least two probe layers (train with num_probes >= 2)")
    num_blocks = modules.dims.num_layers
    results: dict[str, list[float]] = {"a": [], "b": [], "c": [], "b_signed_control": []}
    per_layer: dict[str, dict[str, list[float]]] = {"a": {}, "b": {}, "c": {}}
    generator = torch.Generator().manual_seed(seed)
    with attach_critic(backbone.transformer, token=modules.critic_token, layers=layers) as attachment:
        for start in range(0, len(pairs), batch_size):
            x0, cond = encode_pairs(backbone, pairs[start : start + batch_size])
            x_t, target = _noised(backbone, x0, t_analysis, generator)
            unmasked = _critic_pass(backbone, attachment, modules, x_t, t_analysis, cond, target, hide=False)
            masked = _critic_pass(backbone, attachment, modules, x_t, t_analysis, cond, target, hide=True)
            for l, l_next in zip(layers[:-1], layers[1:]):
                estimate = unmasked["estimates"][l]  # (B, N) the critic's judgement at layer l
                if l + 1 < num_blocks:
                    delta_a = attention_shift(unmasked["scores"][l], unmasked["scores"][l + 1])
                    rho_a = spearman_rows(estimate, delta_a).tolist()
                    results["a"] += rho_a
                    per_layer["a"].setdefault(f"{l}->{l + 1}", []).extend(rho_a)
                delta_b = unmasked["errors"][l] - unmasked["errors"][l_next]
                rho_b = spearman_rows(estimate, delta_b).tolist()
                results["b"] += rho_b
                per_layer["b"].setdefault(f"{l}->{l_next}", []).extend(rho_b)
                delta_c = delta_b - (masked["errors"][l] - masked["errors"][l_next])
                rho_c = spearman_rows(estimate, delta_c).tolist()
                results["c"] += rho_c
                per_layer["c"].setdefault(f"{l}->{l_next}", []).extend(rho_c)
                # control: the same maps with positions shuffled should give rho ~ 0
                permutation = torch.randperm(delta_b.shape[1], generator=generator)
                results["b_signed_control"] += spearman_rows(estimate, delta_b[:, permutation]).tolist()
    return {
        "t": t_analysis,
        "values": results,
        "summary": {
            "experiment_a": summarize(results["a"]),
            "experiment_b": summarize(results["b"]),
            "experiment_c": summarize(results["c"]),
            "shuffled_control": summarize(results["b_signed_control"]),
        },
        "per_layer": {exp: {pair: summarize(v) for pair, v in pairs_.items()} for exp, pairs_ in per_layer.items()},
    }


def plot_probing(study: dict[str, Any], path: Path) -> Path:
    """Heatmap of rho(E_l, E_final) over (probe layer, step) and the probes' loss next to the final one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    layers, times = study["layers"], study["times"]
    grid = np.array([study["spearman"][str(l)] for l in layers])  # (L, steps)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    image = ax1.imshow(grid, aspect="auto", cmap="viridis", vmin=min(0.0, grid.min()), vmax=1.0)
    ax1.set_xticks(range(len(times)), [f"{t:.2f}" for t in times], fontsize=7)
    ax1.set_yticks(range(len(layers)), [f"block {l}" for l in layers])
    ax1.set_xlabel("t (1 = noise)")
    ax1.set_title("Spearman(probe error map, final error map)")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax1.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=6, color="w")
    fig.colorbar(image, ax=ax1)
    for l in layers:
        ax2.plot(times, study["probe_loss"][str(l)], marker="o", label=f"probe @ block {l}")
    ax2.plot(times, study["final_loss"], marker="s", color="k", label=f"final (block {study['num_layers'] - 1})")
    ax2.set_xlabel("t (1 = noise)")
    ax2.set_ylabel("MSE (in the backbone's output space)")
    ax2.set_title("generation ability per layer")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_alignment(alignment: dict[str, Any], path: Path) -> Path:
    """Distributions of the per-case rho of experiments A, B, C (and the shuffled control)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [("a", "A: attention\nredistribution"), ("b", "B: generation\nupdate"), ("c", "C: causal shift\n(unmasked - masked)"),
             ("b_signed_control", "control:\nshuffled maps")]
    data = [alignment["values"][key] or [0.0] for key, _ in names]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.violinplot(data, showmedians=True)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(1, len(names) + 1), [label for _, label in names], fontsize=8)
    ax.set_ylabel("Spearman with critic's predicted error map")
    for i, values in enumerate(data, start=1):
        median = sorted(values)[len(values) // 2]
        ax.text(i, 1.02, f"med {median:+.2f}", ha="center", fontsize=7)
    ax.set_ylim(-1.05, 1.12)
    ax.set_title(f"critic alignment at t = {alignment['t']:.2f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def load_run_modules(config: InlineCriticConfig, backbone, run: str | Path, stage: str) -> InlineCriticModules:
    """Critic modules of `run` after `stage` ("1" or "3"), sized for `backbone`."""
    from refine.inline_critic.train import build_modules, stage_path
    from refine.inline_critic.weights import load_modules

    state, metadata = load_modules(stage_path(run, stage))
    if "probe_layers" in metadata:
        config = config.model_copy(update={"probe_layers": json.loads(metadata["probe_layers"])})
    modules = build_modules(config, backbone)
    modules.load_state_dict(state)
    return modules.eval().requires_grad_(False)


def run_analysis(
    config: InlineCriticConfig,
    run: str | Path,
    output: str | Path,
    *,
    cases: int = 64,
    steps: int = 8,
    t_analysis: float = 0.5,
    backbone=None,
) -> dict[str, Any]:
    """Probing study (needs run/stage1.safetensors) and alignment experiments (needs run/stage3.safetensors);
    writes analysis.json, probing.png and alignment.png to `output`. Returns the report."""
    from refine.inline_critic.data import validation_pairs
    from refine.inline_critic.train import _freeze, build_backbone

    run, output = Path(run), Path(output)
    output.mkdir(parents=True, exist_ok=True)
    backbone = backbone if backbone is not None else build_backbone(config)
    _freeze(backbone)
    pairs = validation_pairs(config.data.model_copy(update={"validation_cases": cases}))
    report: dict[str, Any] = {"run": str(run), "cases": len(pairs), "summary": {}}
    if (run / "stage1.safetensors").is_file():
        study = probing_study(backbone, load_run_modules(config, backbone, run, "1"), pairs, steps=steps, seed=config.data.validation_seed)
        report["probing"] = study
        report["summary"]["probing_spearman_by_layer"] = {l: s["mean"] for l, s in study["spearman_by_layer"].items()}
        report["plots"] = {"probing": str(plot_probing(study, output / "probing.png"))}
    if (run / "stage3.safetensors").is_file():
        alignment = alignment_experiments(backbone, load_run_modules(config, backbone, run, "3"), pairs, t_analysis=t_analysis,
                                          seed=config.data.validation_seed)
        report["alignment"] = {k: v for k, v in alignment.items() if k != "values"}
        report["summary"].update(alignment["summary"])
        report.setdefault("plots", {})["alignment"] = str(plot_alignment(alignment, output / "alignment.png"))
    if not report["summary"]:
        raise ArtifactError(f"{run}: no stage1.safetensors or stage3.safetensors to analyse; train the critic first")
    (output / "analysis.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
