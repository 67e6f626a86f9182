"""Does an Edit-R1 run on a learned reward learn, or hack? Read it off the run's own logs, no model needed.

Usage:
    python benchmarks/edit_r1_reward_hacking.py runs/edit_r1-shapes-vlm            # windows of 10 iterations
    python benchmarks/edit_r1_reward_hacking.py runs/edit_r1-shapes-vlm --window 5 --plot runs/hacking.png

Reads `metrics.jsonl` and `rollouts/rank0.jsonl` of a run whose config tracks an exact reward
beside the trained one (`track_rewards.o`, Edit-R1's ShapeEdit VLM preset) and prints, per window
of iterations, a markdown row:

- the trained reward's mean and its mean within-group std (Edit-R1 Fig. 8: a hacked small judge's
  reward climbs while its variance collapses);
- the tracked exact O of the same rollouts (it falls, or stays flat, while a hacked reward climbs);
- the held-out O (`eval_reward`) at the last evaluation in the window;
- **within-group agreement**: of the pairs of edits of one request whose exact O differ by at least
  `--min-gap`, the share the trained reward orders the same way. NFT's advantages only compare
  edits of one request, so this, not a global correlation, is what the policy can learn from:
  at 0.5 there is nothing to learn and no direction to hack in.

With `--plot`, a picture of the three curves per iteration (matplotlib, Agg).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np

from refine.compare.stats import same_input_pairwise_accuracy
from refine.jsonl import read_jsonl

matplotlib.use("Agg")   # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def groups_of(rewards: list[float | None], exact: list[float | None], group_size: int) -> list[list[tuple[float, float]]]:
    """Per request (`group_size` consecutive rollouts), its (trained reward, exact score) pairs; unscored rollouts left out."""
    pairs = list(zip(rewards, exact))
    return [[(r, o) for r, o in pairs[s:s + group_size] if r is not None and o is not None]
            for s in range(0, len(pairs), group_size)]


def group_std(rewards: list[float], group_size: int) -> float:
    return float(np.mean([np.std(rewards[s:s + group_size]) for s in range(0, len(rewards), group_size)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the run's output_dir")
    parser.add_argument("--track", default="o", help="the tracked exact reward's name (track_rewards.<name>)")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--min-gap", type=float, default=0.05)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()

    logged = dict(valid=lambda r: "iteration" in r, needs="an 'iteration' key", example="{'iteration': ...}")
    metrics = read_jsonl(args.run / "metrics.jsonl", **logged)
    rollouts = {row["iteration"]: row for row in read_jsonl(args.run / "rollouts" / "rank0.jsonl", **logged)}
    evals = {row["iteration"]: row["eval_reward"] for row in metrics if "eval_reward" in row}
    train = {row["iteration"]: row for row in metrics if "reward_mean" in row}
    last = max(train)

    print(f"{args.run}: {last} iterations; held-out O at 0: {evals.get(0, float('nan')):.4f}\n")
    print("| iterations | trained reward (mean, within-group std) | exact O of the same rollouts | held-out O (last eval) | within-group agreement |")
    print("|---|---|---|---|---|")
    every_group = []
    for lo in range(1, last + 1, args.window):
        its = [i for i in range(lo, min(lo + args.window, last + 1)) if i in rollouts]
        rewards = [rollouts[i]["rewards"] for i in its]
        exact = [rollouts[i]["track"][args.track] for i in its]
        groups = [g for r, o in zip(rewards, exact) for g in groups_of(r, o, args.group_size)]
        every_group += groups
        agreement, pairs = same_input_pairwise_accuracy(groups, min_gap=args.min_gap)
        held = [(i, evals[i]) for i in evals if lo <= i < lo + args.window]
        held_text = f"{held[-1][1]:.4f} (at {held[-1][0]})" if held else "-"
        print(f"| {lo}-{its[-1]} | {np.mean([np.mean(r) for r in rewards]):.3f} ({np.mean([group_std(r, args.group_size) for r in rewards]):.3f}) "
              f"| {np.nanmean([np.nanmean(np.array(o, dtype=float)) for o in exact]):.3f} | {held_text} | {agreement or 0:.3f} of {pairs} |")
    agreement, pairs = same_input_pairwise_accuracy(every_group, min_gap=args.min_gap)
    print(f"\nall iterations: within-group agreement {agreement or 0:.3f} over {pairs} pairs "
          f"(exact O gap >= {args.min_gap}); held-out O {evals.get(0, float('nan')):.4f} -> best "
          f"{max(evals.values()):.4f} (at {max(evals, key=evals.get)}), last {evals[max(evals)]:.4f} (at {max(evals)})")

    if args.plot:
        its = sorted(train)
        fig, ax = plt.subplots(figsize=(7, 3.6))
        for key, label, color in (("reward_mean", "trained reward (rollouts)", "tab:orange"),
                                  (f"track_{args.track}_mean", "exact O (same rollouts)", "tab:blue")):
            values = np.array([train[i][key] for i in its], dtype=float)
            # each iteration draws other requests, so its mean swings with their difficulty: the line is a running
            # mean over the window, the raw means faint behind it
            running = [np.nanmean(values[max(0, k - args.window + 1):k + 1]) for k in range(len(values))]
            ax.plot(its, values, color=color, alpha=0.2)
            ax.plot(its, running, color=color, label=f"{label}, running mean of {args.window}")
        ax.plot(sorted(evals), [evals[i] for i in sorted(evals)], "o-", label="exact O (held-out shapes-val)", color="black")
        ax.set_xlabel("iteration")
        ax.set_ylabel("score")
        ax.set_title(args.run.name)
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
