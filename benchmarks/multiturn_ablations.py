"""MT-EditFlow's ablations (issue 25) and NFT against Flow-GRPO, 3 seeds each, on shapes-mt-val.

    python benchmarks/multiturn_ablations.py --out runs/mt-ablations            # train what is missing, evaluate, report
    python benchmarks/multiturn_ablations.py --out runs/mt-ablations --report   # the table only, from what is done

Every arm is `refine train multiturn --config multiturn/shapes` with the arm's overrides, a short
schedule (`--iterations 20 --lr 3e-3`: the preset's recipe before this stop peaked there on
shapes-mt-val) and one seed per run. Runs are resumable (a killed runner picks up where it
stopped: the trainer resumes its checkpoint, finished runs are skipped). Each finished run's EMA
LoRA is then evaluated here, per sequence, on all 120 shapes-mt-val sequences (one trajectory each,
the trainer's evaluation seed and sampler), always with the *graded* exact judge at K = 3 turns,
whatever the arm trained on (the binary-IF arm trains on bucketed IF, the K arms on fewer turns).
The reported split (shapes-mt) is not touched: these runs choose nothing that ships.

Reported per arm: the mean over seeds of delta O_3 against the base editor (paired per sequence),
its 95% interval with the seeds averaged within each sequence first (percentile bootstrap over the
120 sequences, `refine.compare.stats.mean_ci`), each seed's delta, the same for O_1, and the paired
difference arm - default (per sequence, seeds averaged). The sequence-bootstrap interval does not
include training-seed variance; the per-seed deltas show it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from refine.backbones.shapes import load_shapes_backbone
from refine.compare.stats import mean_ci
from refine.config import load_config
from refine.multiturn.config import MultiTurnConfig
from refine.multiturn.data import evaluation_sequences
from refine.multiturn.evaluate import evaluate
from refine.multiturn.train import build_rewards
from refine.presets import find_preset
from refine.training.lora import load_lora

PRESET = "multiturn/shapes"
ARMS: dict[str, list[str]] = {
    "default": [],  # the paper's method: advantage-level fusion, broadcast, lambda_CC 0.3, graded IF, K = 3, NFT
    "per_turn": ["advantage.credit=per_turn"],
    "reward_level": ["advantage.level=reward"],
    "lambda_0.1": ["reward.lambda_cc=0.1"],
    "lambda_0.5": ["reward.lambda_cc=0.5"],
    "binary_if": ["reward.if_scale=binary"],
    "K1": ["rollout.turns=1"],
    "K2": ["rollout.turns=2"],
    # Flow-GRPO from the shared layer with its public settings (SDE at noise 0.7, clip 1e-4, KL 0.04);
    # same rollouts per iteration, reward and iterations as NFT; its CPU time is reported beside.
    "grpo": ["objective.kind=grpo", "rollout.sampler=sde"],
}
EVAL_TURNS = 3


def train_arm(out: Path, arm: str, seed: int, iterations: int, lr: float) -> None:
    """Train (or resume) one run in a subprocess, one thread (the machine is shared)."""
    run = out / arm / f"seed{seed}"
    if (run / "done.json").is_file():
        return
    cmd = ["refine", "train", "multiturn", "--config", PRESET, f"log.output_dir={run}", f"train.seed={seed}",
           f"train.iterations={iterations}", f"optim.lr={lr}", "eval.benchmark=null", "log.checkpoint_every=5",
           "log.keep_last=2", "log.progress=false", "train.max_cpu_seconds=100000", *ARMS[arm]]
    print(f"[{time.strftime('%H:%M:%S')}] train {arm} seed {seed}: {' '.join(cmd[3:])}", flush=True)
    started = time.time()
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    cpu = max(row.get("cpu_seconds_total", 0.0) for row in rows)  # the trainer's process CPU (one invocation: resumes restart it)
    (run / "done.json").write_text(json.dumps({"wall_s": time.time() - started, "train_cpu_s_logged": cpu}))


def evaluate_lora(lora: Path | None, config: MultiTurnConfig, sequences, seed: int | None = None) -> dict[str, list[float]]:
    """Per-sequence IF/CC/O at turns 1..3 of the base editor (lora None) or the editor with `lora`, at evaluation
    `seed` (None: the trainer's, `config.eval.seed`)."""
    torch.manual_seed(0)
    backbone = load_shapes_backbone()
    if lora is not None:
        load_lora(backbone.transformer, lora, adapter_name="multiturn")
    rewards = build_rewards(config, scale=1.0)
    with torch.no_grad():
        _, scored = evaluate(backbone, sequences, rewards, turns=EVAL_TURNS, sampler=config.rollout.sampler, steps=config.rollout.steps,
                             guidance=config.rollout.guidance, seed=config.eval.seed if seed is None else seed, max_batch=config.rollout.max_batch)
    IF, CC = scored.rewards["if"], scored.rewards["cc"]  # (n, K)
    O = torch.sqrt((IF * CC).clamp_min(0))
    out: dict[str, list[float]] = {}
    for k in range(EVAL_TURNS):
        out[f"if_t{k + 1}"] = IF[:, k].tolist()
        out[f"cc_t{k + 1}"] = CC[:, k].tolist()
        out[f"o_t{k + 1}"] = O[:, k].tolist()
    return out


def cached_eval(path: Path, lora: Path | None, config, sequences) -> dict[str, list[float]]:
    if not path.is_file():
        print(f"[{time.strftime('%H:%M:%S')}] evaluate {path.parent.name if lora is None else lora.parent}", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(evaluate_lora(lora, config, sequences)))
    return json.loads(path.read_text())


def report(out: Path, seeds: list[int], metrics=("o_t3", "o_t1", "if_t3", "cc_t3")) -> str:
    base = json.loads((out / "base" / "eval.json").read_text())
    evals = {arm: {s: json.loads((out / arm / f"seed{s}" / "eval.json").read_text())
                   for s in seeds if (out / arm / f"seed{s}" / "eval.json").is_file()} for arm in ARMS}
    cpu = {arm: [json.loads((out / arm / f"seed{s}" / "done.json").read_text())["train_cpu_s_logged"]
                 for s in seeds if (out / arm / f"seed{s}" / "done.json").is_file()] for arm in ARMS}
    lines = [f"base (120 shapes-mt-val sequences): " + ", ".join(f"{m} {np.mean(base[m]):.4f}" for m in metrics), "",
             "| arm | seeds | " + " | ".join(f"delta {m} [95%]" for m in metrics) + " | delta O_3 per seed | arm - default, O_3 | train CPU s/run |",
             "|---|---|" + "---|" * len(metrics) + "---|---|---|"]
    for arm, runs in evals.items():
        if not runs:
            continue
        cells = []
        for m in metrics:
            deltas = np.mean([np.array(r[m]) - np.array(base[m]) for r in runs.values()], axis=0)  # seeds averaged per sequence
            ci = mean_ci(deltas, resamples=10_000)
            cells.append(f"{ci.mean:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}]")
        per_seed = ", ".join(f"{np.mean(np.array(r['o_t3']) - np.array(base['o_t3'])):+.3f}" for r in runs.values())
        vs_default = ""
        shared = [s for s in runs if s in evals["default"]]
        if arm != "default" and shared:
            d = np.mean([np.array(runs[s]["o_t3"]) - np.array(evals["default"][s]["o_t3"]) for s in shared], axis=0)
            ci = mean_ci(d, resamples=10_000)
            vs_default = f"{ci.mean:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}]"
        lines.append(f"| {arm} | {len(runs)} | " + " | ".join(cells) + f" | {per_seed} | {vs_default} | {np.mean(cpu[arm]):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/mt-ablations"))
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--report", action="store_true", help="print the table from what is done; train nothing")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.report:
        config = load_config(MultiTurnConfig, find_preset(PRESET))
        sequences = evaluation_sequences("shapes-mt-val", 120)
        cached_eval(args.out / "base" / "eval.json", None, config, sequences)
        for seed in args.seeds:  # seed-major: a partial grid still has every arm at seed 0 first
            for arm in args.arms:
                train_arm(args.out, arm, seed, args.iterations, args.lr)
                run = args.out / arm / f"seed{seed}"
                cached_eval(run / "eval.json", run / "lora", config, sequences)
                print(report(args.out, args.seeds), flush=True)
    print(report(args.out, args.seeds))


if __name__ == "__main__":
    sys.exit(main())
