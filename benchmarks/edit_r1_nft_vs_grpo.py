"""Edit-R1: DiffusionNFT against Flow-GRPO side by side (issue 22, section 4), 3 seeds, on shapes-val.

    python benchmarks/edit_r1_nft_vs_grpo.py --out runs/nft-vs-grpo                       # train what is missing, evaluate, report
    python benchmarks/edit_r1_nft_vs_grpo.py --out runs/nft-vs-grpo --objectives grpo     # a second runner on another core
    python benchmarks/edit_r1_nft_vs_grpo.py --out runs/nft-vs-grpo --report              # the table and plot from what is done

Both objectives train the bundled ShapeEdit editor's LoRA with the same reward (ShapeEdit's exact
judge, O = sqrt(IF x CC)), data stream, rollouts per iteration (8 groups x 8 edits), LoRA, EMA and
loop: `edit_r1/shapes` (NFT, DPM-Solver 6 steps at CFG 2, lr 1e-3) and `edit_r1/shapes_grpo`
(Flow-GRPO's public settings: SDE at noise 0.7, 6 steps, clip 1e-4, KL 0.04, lr 3e-3), each at its
preset's learning rate. The budget is the same in CPU-seconds, not iterations: Flow-GRPO costs
more per iteration (it recomputes log-probabilities at every recorded SDE step), so NFT gets
`--nft-iterations` and GRPO `--grpo-iterations`, chosen to spend about the same training CPU. Both
are evaluated the same way (216 shapes-val cases, Euler 8 steps at CFG 2 as `refine compare`
runs the editor, evaluation seed 1234) every `--every` iterations; the curve is held-out reward
against the trainer's process CPU-seconds (`cpu_seconds` per iteration, evaluation excluded).

Reported (issue 22): the CPU time each objective needs to reach GRPO's final reward (the mean of
the seeds' final rewards), read off each objective's seed-mean curve (first point at or above it,
linearly interpolated between evaluations; per-seed times beside it), their ratio;
if NFT never reaches it, NFT's reward at GRPO's whole budget; the final held-out gain of each with
a 95% interval (per case, the seeds averaged within a case, paired against the base editor: a
percentile bootstrap over cases that leaves training-seed variance to the per-seed column); and a
plot. Runs resume (the trainer's own checkpoints; finished runs are skipped). The reported split
(shapes-bench) is never touched: nothing here ships.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from refine.backbones.shapes import load_shapes_backbone  # noqa: E402
from refine.compare.stats import mean_ci  # noqa: E402
from refine.config import load_config  # noqa: E402
from refine.edit_r1.config import EditR1Config  # noqa: E402
from refine.edit_r1.data import evaluation_requests  # noqa: E402
from refine.edit_r1.evaluate import evaluate  # noqa: E402
from refine.presets import find_preset  # noqa: E402
from refine.registry import registry  # noqa: E402
from refine.training.lora import load_lora  # noqa: E402

PRESETS = {"nft": "edit_r1/shapes", "grpo": "edit_r1/shapes_grpo"}
EVAL = ["eval.benchmark=shapes-val", "eval.cases=216", "eval.sampler=euler", "eval.steps=8", "eval.guidance=2.0", "eval.seed=1234"]


def train_run(out: Path, objective: str, seed: int, iterations: int, every: int) -> None:
    """Train (or resume) one run in a subprocess, one thread (the machine is shared)."""
    run = out / objective / f"seed{seed}"
    if (run / "done.json").is_file():
        return
    cmd = ["refine", "train", "edit-r1", "--config", PRESETS[objective], f"log.output_dir={run}", f"train.seed={seed}",
           f"train.iterations={iterations}", f"eval.every={every}", *EVAL, f"log.checkpoint_every={every}", "log.keep_last=2",
           "log.sample_every=0", "log.progress=false"]
    print(f"[{time.strftime('%H:%M:%S')}] train {objective} seed {seed}: {' '.join(cmd[3:])}", flush=True)
    started = time.time()
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    (run / "done.json").write_text(json.dumps({"wall_s": time.time() - started}))


def curve(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(cumulative training CPU-seconds, held-out reward) at each evaluation of a run's metrics.jsonl.

    A resumed run appends rows again from its checkpoint: the last row of each iteration wins.
    """
    rows: dict[int, dict] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows.setdefault(row["iteration"], {}).update(row)
    cpu, points = 0.0, []
    for iteration in sorted(rows):
        cpu += rows[iteration].get("cpu_seconds", 0.0)
        if "eval_reward" in rows[iteration]:
            points.append((cpu, rows[iteration]["eval_reward"]))
    xs, ys = zip(*points)
    return np.array(xs), np.array(ys)


def cpu_to_reach(xs: np.ndarray, ys: np.ndarray, target: float) -> float | None:
    """CPU-seconds at which a curve first reaches `target` (linear between evaluations), None if never."""
    for i in range(len(ys)):
        if ys[i] >= target:
            if i == 0:
                return float(xs[0])
            frac = (target - ys[i - 1]) / (ys[i] - ys[i - 1])
            return float(xs[i - 1] + frac * (xs[i] - xs[i - 1]))
    return None


def evaluate_lora(lora: Path | None, config: EditR1Config) -> list[float]:
    """Per-case held-out O of the base editor (lora None) or the editor with `lora`, as the trainer evaluates."""
    torch.manual_seed(0)
    backbone = load_shapes_backbone()
    if lora is not None:
        load_lora(backbone.transformer, lora, adapter_name="edit_r1")
    requests = evaluation_requests("shapes-val", 216, 1234)
    reward = registry.build("reward", config.reward)
    result = evaluate(backbone, requests, reward, sampler="euler", steps=8, guidance=2.0, batch_size=64)
    return [float("nan") if s is None else s for s in result.scores]


def cached_eval(path: Path, lora: Path | None, config: EditR1Config) -> list[float]:
    if not path.is_file():
        print(f"[{time.strftime('%H:%M:%S')}] evaluate {'base' if lora is None else lora}", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(evaluate_lora(lora, config)))
    return json.loads(path.read_text())


def mean_curve(runs) -> tuple[np.ndarray, np.ndarray]:
    """The seeds' curves averaged evaluation by evaluation (CPU-seconds and reward), cut to the shortest.

    Time to a reward is read off this curve rather than per seed: one seed's noisy final point
    should not decide whether an objective "ever" reaches the mean of all seeds' finals.

    Example:
        >>> mean_curve([(np.array([0., 10.]), np.array([.5, .6])), (np.array([0., 12., 20.]), np.array([.5, .7, .8]))])
        (array([ 0., 11.]), array([0.5 , 0.65]))
    """
    runs = list(runs)
    n = min(len(xs) for xs, _ in runs)
    return np.mean([xs[:n] for xs, _ in runs], axis=0), np.mean([ys[:n] for _, ys in runs], axis=0)


def report(out: Path, seeds: list[int]) -> str:
    config = load_config(EditR1Config, find_preset(PRESETS["nft"]))
    base = np.array(cached_eval(out / "base" / "eval.json", None, config))
    curves = {o: {s: curve(out / o / f"seed{s}") for s in seeds if (out / o / f"seed{s}" / "done.json").is_file()} for o in PRESETS}
    lines = [f"base editor: held-out O {np.nanmean(base):.4f} (216 shapes-val cases, Euler 8, CFG 2)", "",
             "| objective | seeds | train CPU-s (mean) | final held-out O per seed | final delta O [95%, per case] |",
             "|---|---|---|---|---|"]
    finals: dict[str, float] = {}
    for objective, runs in curves.items():
        if not runs:
            continue
        deltas = []
        for s in runs:
            lora = out / objective / f"seed{s}" / "lora"
            deltas.append(np.array(cached_eval(out / objective / f"seed{s}" / "eval.json", lora, config)) - base)
        ci = mean_ci(np.nanmean(deltas, axis=0), resamples=10_000)
        finals[objective] = float(np.mean([ys[-1] for _, ys in runs.values()]))
        lines.append(f"| {objective} | {len(runs)} | {np.mean([xs[-1] for xs, _ in runs.values()]):.0f} | "
                     + ", ".join(f"{ys[-1]:.4f}" for _, ys in runs.values()) + f" | {ci.mean:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}] |")
    if "grpo" in finals and "nft" in finals:
        target = finals["grpo"]
        lines += ["", f"GRPO's final reward (mean over seeds): {target:.4f}", "",
                  "| objective | CPU-s to reach it on the seed-mean curve | per seed |", "|---|---|---|"]
        reach = {}
        for objective in ("grpo", "nft"):
            per_seed = [cpu_to_reach(xs, ys, target) for xs, ys in curves[objective].values()]
            reach[objective] = cpu_to_reach(*mean_curve(curves[objective].values()), target)
            lines.append(f"| {objective} | {'never' if reach[objective] is None else f'{reach[objective]:.0f}'} | "
                         + ", ".join("never" if t is None else f"{t:.0f}" for t in per_seed) + " |")
        if None not in reach.values():
            lines += ["", f"CPU-time ratio GRPO / NFT to GRPO's final reward: **{reach['grpo'] / reach['nft']:.1f}x**"]
        else:  # GRPO's own mean curve misses only when its seeds stopped at different iterations
            budget = np.mean([xs[-1] for xs, _ in curves["grpo"].values()])
            at = [float(np.interp(budget, xs, ys)) for xs, ys in curves["nft"].values()]
            missed = " and ".join(o for o, t in reach.items() if t is None)
            lines += ["", f"no ratio: {missed} never reaches it on the seed-mean curve; NFT's reward at GRPO's whole budget ({budget:.0f} CPU-s): "
                      + ", ".join(f"{a:.4f}" for a in at) + f" (mean {np.mean(at):.4f})"]
    plot(curves, float(np.nanmean(base)), out / "nft_vs_grpo.png")
    return "\n".join(lines)


def plot(curves: dict, base: float, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    colours = {"nft": "tab:blue", "grpo": "tab:orange"}
    for objective, runs in curves.items():
        for i, (seed, (xs, ys)) in enumerate(sorted(runs.items())):
            ax.plot(xs, ys, marker="o", ms=3, color=colours[objective], alpha=0.8,
                    label=f"{'DiffusionNFT' if objective == 'nft' else 'Flow-GRPO'}" if i == 0 else None)
    ax.axhline(base, color="grey", ls="--", lw=1, label="base editor")
    ax.set_xlabel("training CPU-seconds (one thread)")
    ax.set_ylabel("held-out O (216 shapes-val cases)")
    ax.set_title("Edit-R1 on ShapeEdit: NFT vs Flow-GRPO, one line per seed")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/nft-vs-grpo"))
    parser.add_argument("--objectives", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--nft-iterations", type=int, default=36)
    parser.add_argument("--grpo-iterations", type=int, default=24)
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if not args.report:
        for seed in args.seeds:
            for objective in args.objectives:
                iterations = args.nft_iterations if objective == "nft" else args.grpo_iterations
                train_run(args.out, objective, seed, iterations, args.every)
    print(report(args.out, args.seeds))


if __name__ == "__main__":
    main()
