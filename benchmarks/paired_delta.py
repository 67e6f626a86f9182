"""Paired difference of any per-case metric between two entries of a finished `refine compare` run.

Example (the MT-EditFlow figures of the README: turn-3 and turn-1 O on shapes-mt, 4 seeds):

    python benchmarks/paired_delta.py runs/compare/shapes-mt --entry +multiturn --metric o_t3 o_t1 overall

compare's summary gives the paired delta of its headline metric only; a multi-turn strategy is
judged on O at the last turn (MT-EditFlow's O_3) with turn 1 not falling, so this reads the run's
`cases.jsonl` and prints, per metric, the mean paired difference with two 95% intervals:
- per item: bootstrap over (case, seed) pairs, as compare's Δ column;
- per case: the seeds of a case averaged first, bootstrap over cases (the stricter one when seeds
  of one case are correlated, since they share the source scene and instructions).
An entry or reference may be a comma-separated group, e.g. the training seeds of one arm
(`--entry +lora.s0,+lora.s1,+lora.s2`): the group's scores are averaged per item first
(`refine.compare.stats.group_differences`).
The pairing is `refine.compare.stats.group_differences`; both intervals are `refine.compare.stats.mean_ci` (the percentile bootstrap compare's own intervals use, seed 0).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from refine.compare.stats import case_means, group_differences, mean_ci
from refine.errors import RefineError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished compare run folder (holds cases.jsonl)")
    parser.add_argument("--entry", required=True, help="an entry, or a comma-separated group averaged per item")
    parser.add_argument("--reference", default="base", help="an entry, or a comma-separated group averaged per item")
    parser.add_argument("--metric", nargs="+", default=["overall"])
    parser.add_argument("--resamples", type=int, default=10_000)
    args = parser.parse_args()
    rows = [json.loads(line) for line in (args.run / "cases.jsonl").read_text().splitlines() if line.strip()]
    print(f"{args.run}: {args.entry} - {args.reference}, mean [95% interval]")
    for metric in args.metric:
        try:
            diffs = group_differences(rows, args.entry.split(","), args.reference.split(","), metric)
        except RefineError as err:
            raise SystemExit(f"error: {err}") from None
        items = np.array(list(diffs.values()))
        cases = np.array(list(case_means(diffs).values()))
        item, case = mean_ci(items, resamples=args.resamples), mean_ci(cases, resamples=args.resamples)
        print(f"  {metric:10s} {item.mean:+.4f}  per item [{item.low:+.4f}, {item.high:+.4f}] (n={len(items)})"
              f"  per case [{case.low:+.4f}, {case.high:+.4f}] (n={len(cases)})")


if __name__ == "__main__":
    main()
