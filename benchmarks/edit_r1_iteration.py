"""Edit-R1 on ShapeEdit: seconds per iteration (rollout / reward / update) and judge reward gained per CPU-minute.

Usage:
    python benchmarks/edit_r1_iteration.py                               # the shapes preset, 20 iterations
    python benchmarks/edit_r1_iteration.py --iterations 5 --eval-cases 36 --threads 2
    python benchmarks/edit_r1_iteration.py --config examples/configs/edit_r1/shapes.yaml train.seed=1
    python benchmarks/edit_r1_iteration.py --seeds 0 1 2          # seed-to-seed spread of the gain

What it runs: `refine.edit_r1.train` with the given preset (default examples/configs/edit_r1/shapes.yaml)
on the bundled ShapeEdit editor, evaluating the EMA weights on the preset's held-out subset of the tuning split shapes-val (shapes-bench
before issue 21) before
and after. It reports

* seconds per iteration, and its split into rollout / reward / update (means over iterations,
  the first one excluded as warm-up when there are more than two);
* the held-out judge reward before and after, and the gain per CPU-minute: the gain divided by the
  process CPU time of the training iterations (`time.process_time`, all threads, evaluation
  excluded; logged per iteration as `cpu_seconds`). This is the number other strategies are
  compared on.

With `--seeds`, the run is repeated once per training seed (the held-out set stays fixed) and the
table gives each seed's figures plus the mean and standard deviation of the gain.

Output: a Markdown table on stdout and a JSON file (`--json`, default <output>/benchmark.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(Path(__file__).resolve().parent.parent / "examples/configs/edit_r1/shapes.yaml"))
    parser.add_argument("--iterations", type=int, default=None, help="override train.iterations")
    parser.add_argument("--eval-cases", type=int, default=None, help="override eval.cases")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--output", default="runs/bench_edit_r1_iteration")
    parser.add_argument("--json", default=None)
    parser.add_argument("--seeds", type=int, nargs="*", default=None, help="repeat with these train.seed values")
    parser.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    args = parser.parse_args()

    import torch

    from refine.config import load_config
    from refine.edit_r1.config import EditR1Config
    from refine.edit_r1.train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [*args.overrides, f"log.output_dir={args.output}", "log.resume=false", "log.checkpoint_every=0",
                 "log.sample_every=0", "eval.every=0"]
    if args.iterations:
        overrides.append(f"train.iterations={args.iterations}")
    if args.eval_cases:
        overrides.append(f"eval.cases={args.eval_cases}")
    seeds = args.seeds or [None]
    runs = []
    for seed in seeds:
        output = args.output if seed is None else f"{args.output}/seed{seed}"
        extra = [f"log.output_dir={output}"] + ([f"train.seed={seed}"] if seed is not None else [])
        config = load_config(EditR1Config, args.config, overrides + extra)
        runs.append(run_once(config, output, train))
        runs[-1]["seed"] = config.train.seed
    summary = runs[0] if len(runs) == 1 else _spread(runs)
    summary.update({"config": args.config, "overrides": overrides, "threads": torch.get_num_threads()})
    path = Path(args.json or Path(args.output) / "benchmark.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    keys = ("seconds_per_iteration", "seconds_rollout", "seconds_reward", "seconds_update", "eval_reward_before",
            "eval_reward_after", "train_cpu_minutes", "reward_gain_per_cpu_minute")
    print("| seed | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 1))
    for run in runs:
        print(f"| {run['seed']} | " + " | ".join(f"{run[k]:.4f}" for k in keys) + " |")
    if len(runs) > 1:
        print(f"\ngain after - before: {summary['gain_mean']:.4f} +- {summary['gain_std']:.4f} (mean +- std over seeds {seeds})")
    print(f"\n{runs[0]['iterations']} iterations of {runs[0]['samples_per_iteration']} samples, "
          f"{summary['threads']} thread(s), {runs[0]['eval_cases']} held-out cases; JSON: {path}")


def run_once(config, output: str, train) -> dict:
    """Train once from scratch; the figures of the docstring."""
    shutil.rmtree(output, ignore_errors=True)
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    result = train(config)
    cpu_total, wall_total = time.process_time() - cpu_started, time.perf_counter() - wall_started
    rows = [r for r in result.metrics if r["iteration"] > 0]
    timed = rows[1:] if len(rows) > 2 else rows  # the first iteration warms caches up
    mean = lambda key: sum(r.get(key) or 0.0 for r in timed) / len(timed)  # noqa: E731
    before, after = result.eval_history[0][1], result.eval_history[-1][1]
    train_cpu = sum(r["cpu_seconds"] for r in rows)  # evaluation excluded
    train_wall = sum(r["seconds_iteration"] - (r.get("seconds_eval") or 0.0) for r in rows)
    return {
        "iterations": len(rows),
        "samples_per_iteration": config.rollout.groups_per_iteration * config.rollout.group_size,
        "seconds_per_iteration": mean("seconds_iteration") - mean("seconds_eval"),
        "seconds_rollout": mean("seconds_rollout"),
        "seconds_reward": mean("seconds_reward"),
        "seconds_update": mean("seconds_update"),
        "eval_cases": config.eval.cases,
        "eval_history": result.eval_history,
        "eval_reward_before": before,
        "eval_reward_after": after,
        "train_cpu_minutes": train_cpu / 60.0,
        "train_wall_minutes": train_wall / 60.0,
        "reward_gain_per_cpu_minute": (after - before) / (train_cpu / 60.0) if train_cpu > 0 else float("nan"),
        "run_wall_minutes": wall_total / 60.0,
        "run_cpu_minutes": cpu_total / 60.0,
    }


def _spread(runs: list[dict]) -> dict:
    import statistics

    gains = [r["eval_reward_after"] - r["eval_reward_before"] for r in runs]
    per_minute = [r["reward_gain_per_cpu_minute"] for r in runs]
    return {
        "runs": runs,
        "gain_mean": statistics.mean(gains),
        "gain_std": statistics.stdev(gains),
        "reward_gain_per_cpu_minute_mean": statistics.mean(per_minute),
        "reward_gain_per_cpu_minute_std": statistics.stdev(per_minute),
    }


if __name__ == "__main__":
    main()
