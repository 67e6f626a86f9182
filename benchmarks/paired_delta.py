"""Paired difference of any per-case metric between two entries of a finished `refine compare` run.

Example (the MT-EditFlow figures of the README: turn-3 and turn-1 O on shapes-mt, 4 seeds):

    python benchmarks/paired_delta.py runs/compare/shapes-mt --entry +multiturn --metric o_t3 o_t1 overall

compare's summary gives the paired delta of its headline metric only; a multi-turn strategy is
judged on O at the last turn (MT-EditFlow's O_3) with turn 1 not falling, so this reads the run's
`cases.jsonl` and prints, per metric, the mean paired difference with two 95% intervals:
- per item: bootstrap over (case, seed) pairs, as compare's Δ column;
- per case: the seeds of a case averaged first, bootstrap over cases (the stricter one when seeds
  of one case are correlated, since they share the source scene and instructions).
Both are `refine.compare.stats.mean_ci` (the percentile bootstrap compare's own intervals use, seed 0).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from refine.compare.stats import mean_ci


def paired(rows: list[dict], entry: str, reference: str, metric: str) -> dict[tuple[str, int], float]:
    """(case_id, seed) -> metric(entry) - metric(reference), over items both entries scored."""
    values: dict[str, dict[tuple[str, int], float]] = {}
    for row in rows:
        value = row["scores"].get(metric)
        if value is not None:
            values.setdefault(row["entry"], {})[(row["case_id"], row["seed"])] = float(value)
    if entry not in values or reference not in values:
        raise SystemExit(f"error: the run has no {metric!r} for {entry!r} and {reference!r} (entries: {sorted(values)})")
    return {key: v - values[reference][key] for key, v in values[entry].items() if key in values[reference]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished compare run folder (holds cases.jsonl)")
    parser.add_argument("--entry", required=True)
    parser.add_argument("--reference", default="base")
    parser.add_argument("--metric", nargs="+", default=["overall"])
    parser.add_argument("--resamples", type=int, default=10_000)
    args = parser.parse_args()
    rows = [json.loads(line) for line in (args.run / "cases.jsonl").read_text().splitlines() if line.strip()]
    print(f"{args.run}: {args.entry} - {args.reference}, mean [95% interval]")
    for metric in args.metric:
        diffs = paired(rows, args.entry, args.reference, metric)
        items = np.array(list(diffs.values()))
        by_case: dict[str, list[float]] = {}
        for (case, _seed), d in diffs.items():
            by_case.setdefault(case, []).append(d)
        cases = np.array([np.mean(v) for v in by_case.values()])
        item, case = mean_ci(items, resamples=args.resamples), mean_ci(cases, resamples=args.resamples)
        print(f"  {metric:10s} {item.mean:+.4f}  per item [{item.low:+.4f}, {item.high:+.4f}] (n={len(items)})"
              f"  per case [{case.low:+.4f}, {case.high:+.4f}] (n={len(cases)})")


if __name__ == "__main__":
    main()
