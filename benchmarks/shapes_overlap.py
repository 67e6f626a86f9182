"""The bundled ShapeEdit editor on shapes-bench cases it may have trained on against the rest (issue 21).

Usage:
    python benchmarks/shapes_overlap.py                       # all trained draws, 150 s of the stream, then O
    python benchmarks/shapes_overlap.py --stream-seconds 0 --workers 16   # the stream's full million

Which cases overlap. A case is its source scene and its edit, not its pixels or words, so the scan
generates training draws (no image is rendered) and looks each draw's (source, edit) up in a dict
of the 540 shapes-bench cases. Draws are generated raw, i.e. as they were before `training_stream`
learnt to skip benchmark cases (`refine.shapes.data.stream_case(..., skip_reserved=False)`). Two sets
of draws are scanned:

* `stream`: the first `--stream-items` draws of `training_stream(0)` (its default 30% indirect
  phrasings), the issue's measure, cut at `--stream-seconds` of scanning (the count reached is
  printed: ~0.8 ms per draw per process, so a million draws need ~13 CPU-minutes);
* `trained`: the draws the bundled editor was actually trained on. Its eight stages all ran
  `examples/configs/base/shapes.yaml` (seed 0, 25% indirect) on one process, where batch k is
  `training_stream(ShapesBatches.batch_seed(k))`'s first `batch_size` draws: stages 1-7 read
  batches 0-6999 of 32 (stages 5-7 restart at batch 0 from the previous weights), stage 8
  batches 0-1999 of 64, whose first 32 draws are stage 1-7's. That is 288,000 distinct draws
  (~780,000 draws seen, many twice or more).

Scoring is benchmarks/shapes_editor_quality.py's: `score_cases` on all 540 cases in split order
(Euler, the editor's 16 steps, CFG 2, seed 0: case i is sampled with seed i), the judge's
O = sqrt(IF * CC). Printed per definition: mean O of the overlapping and the other cases, their
difference with a 95% bootstrap interval (`refine.compare.stats.difference_ci`), and the same
difference within (category, phrasing, object count) strata: the draws that recur in a random
stream are the simple ones (one object, a recolour), so the plain gap mixes "seen in training"
with "easy".
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from multiprocessing import Pool

import numpy as np

from refine.shapes.editor_training.data import ShapesBatches
from refine.shapes.data import load_split, stream_case

_BENCH: dict = {}
CHUNK = 2000


def _init() -> None:
    for case in load_split("shapes-bench"):
        _BENCH[(case.source, case.edit)] = case.id
        _BENCH[("target", case.source, case.target)] = case.id


def _scan(job: tuple[str, int, int, float, int]) -> list[tuple[str, str]]:
    """Bench ids hit by draws `start..stop` of stream `seed` (one chunk): ("edit" | "target", id) per hit."""
    _, seed, start, indirect, stop = job
    hits = []
    for index in range(start, stop):
        case = stream_case(seed, index, indirect_fraction=indirect, skip_reserved=False)
        if (case.source, case.edit) in _BENCH:
            hits.append(("edit", _BENCH[(case.source, case.edit)]))
        elif ("target", case.source, case.target) in _BENCH:
            hits.append(("target", _BENCH[("target", case.source, case.target)]))
    return hits


def _trained_jobs() -> list[tuple[str, int, int, float, int]]:
    batches = ShapesBatches(seed=0, batch_size=32, tokenizer=None, indirect_fraction=0.25)
    jobs = [("trained", batches.batch_seed(k), 0, 0.25, 32) for k in range(7000)]
    jobs += [("trained", batches.batch_seed(k), 32, 0.25, 64) for k in range(2000)]
    return jobs


def scan(jobs, workers: int, seconds: float) -> tuple[dict[str, int], dict[str, int], int]:
    """Run `jobs` in order until done or `seconds` pass (0: no limit): draws per id, by (source, edit) and by (source, target) only."""
    by_edit, by_target, done = defaultdict(int), defaultdict(int), 0
    started = time.perf_counter()
    with Pool(workers, initializer=_init) as pool:
        for job, hits in zip(jobs, pool.imap(_scan, jobs, chunksize=max(1, CHUNK // (jobs[0][4] - jobs[0][2])))):
            done += job[4] - job[2]
            for kind, case_id in hits:
                (by_edit if kind == "edit" else by_target)[case_id] += 1
            if seconds and time.perf_counter() - started > seconds:
                pool.terminate()
                break
    return dict(by_edit), dict(by_target), done


def stratified_gap(rows, overlap: set[str], resamples: int = 2000, seed: int = 0) -> tuple[float, float, float, int]:
    """Mean over strata (weighted by overlapping cases) of O(overlap) - O(rest), with a percentile bootstrap.

    Strata are (category, phrasing, object count of the source); a stratum counts only when both
    groups have a case in it. Each group is resampled within each stratum (scipy's bootstrap has
    no strata, hence the loop). Returns (gap, low, high, overlapping cases counted).
    """
    strata = defaultdict(lambda: ([], []))
    for row in rows:
        strata[row["stratum"]][0 if row["id"] in overlap else 1].append(row["overall"])
    used = [(np.array(a), np.array(b)) for a, b in strata.values() if a and b]
    if not used:
        return float("nan"), float("nan"), float("nan"), 0
    weights = np.array([len(a) for a, _ in used], dtype=np.float64)
    weights /= weights.sum()
    gap = float(sum(w * (a.mean() - b.mean()) for w, (a, b) in zip(weights, used)))
    rng = np.random.default_rng(seed)
    draws = np.zeros(resamples)
    for w, (a, b) in zip(weights, used):
        draws += w * (rng.choice(a, (resamples, a.size)).mean(1) - rng.choice(b, (resamples, b.size)).mean(1))
    low, high = np.percentile(draws, [2.5, 97.5])
    return gap, float(low), float(high), int(sum(a.size for a, _ in used))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream-items", type=int, default=1_000_000, help="draws of training_stream(0) to scan")
    parser.add_argument("--stream-seconds", type=float, default=150.0, help="scan budget for the stream's draws (0: no limit)")
    parser.add_argument("--trained-seconds", type=float, default=0.0, help="scan budget for the trained draws (0: no limit)")
    parser.add_argument("--workers", type=int, default=2, help="scanning processes")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for the editor")
    parser.add_argument("--json", default=None, help="also write every figure to this JSON file")
    args = parser.parse_args()

    import torch

    from refine.backbones.shapes import load_shapes_backbone
    from refine.shapes.evaluate import score_cases
    from refine.compare.stats import difference_ci

    report: dict = {}
    started = time.perf_counter()
    stream_jobs = [("stream", 0, s, 0.3, min(s + CHUNK, args.stream_items)) for s in range(0, args.stream_items, CHUNK)]
    trained_jobs = _trained_jobs()
    overlaps = {}
    for name, jobs, seconds in (("trained", trained_jobs, args.trained_seconds), ("stream", stream_jobs, args.stream_seconds)):
        t0 = time.perf_counter()
        by_edit, by_target, done = scan(jobs, args.workers, seconds)
        total = sum(j[4] - j[2] for j in jobs)
        overlaps[name] = set(by_edit)
        report[name] = {"draws_scanned": done, "draws_planned": total, "seconds": round(time.perf_counter() - t0, 1),
                        "cases_by_edit": len(by_edit), "draws_by_edit": sum(by_edit.values()),
                        "cases_by_target_only": sorted(set(by_target) - set(by_edit)), "ids": sorted(by_edit)}
        print(f"{name}: {done:,} of {total:,} draws scanned in {report[name]['seconds']:.0f} s; "
              f"{len(by_edit)} shapes-bench cases hit by (source, edit) ({sum(by_edit.values())} draws), "
              f"{len(report[name]['cases_by_target_only'])} more by (source, target) only", flush=True)

    torch.set_num_threads(args.threads)
    backbone = load_shapes_backbone()
    bench = load_split("shapes-bench")
    t0 = time.perf_counter()
    rows = score_cases(backbone, bench, steps=16, guidance=2.0, seed=0, batch_size=64)
    for case, row in zip(bench, rows):
        row["id"], row["stratum"] = case.id, (case.category, case.phrasing, len(case.source.objects))
    print(f"\nbundled editor on all {len(rows)} shapes-bench cases (Euler 16 steps, CFG 2, seed 0): "
          f"O {np.mean([r['overall'] for r in rows]):.3f} ({time.perf_counter() - t0:.0f} s)\n")
    print("| draws | overlapping cases | O overlapping | O other | difference [95% CI] | within strata [95% CI] (cases) |")
    print("|---|---|---|---|---|---|")
    for name, overlap in overlaps.items():
        inside = [r["overall"] for r in rows if r["id"] in overlap]
        outside = [r["overall"] for r in rows if r["id"] not in overlap]
        gap = difference_ci(inside, outside, resamples=2000)
        strat = stratified_gap(rows, overlap)
        report[name].update({"o_overlap": float(np.mean(inside)) if inside else None, "o_other": float(np.mean(outside)),
                             "difference": gap.to_json(), "within_strata": dict(zip(("mean", "low", "high", "cases"), strat))})
        label = f"{name} ({report[name]['draws_scanned']:,})"
        print(f"| {label} | {len(inside)} | {np.mean(inside) if inside else float('nan'):.3f} | {np.mean(outside):.3f} | "
              f"{gap.mean:+.3f} [{gap.low:+.3f}, {gap.high:+.3f}] | {strat[0]:+.3f} [{strat[1]:+.3f}, {strat[2]:+.3f}] ({strat[3]}) |")
    overlap_all = set.union(*overlaps.values())
    objects = lambda ids: np.mean([len(c.source.objects) for c in bench if (c.id in overlap_all) == ids])  # noqa: E731
    print(f"\nsource objects per case: overlapping {objects(True):.2f}, other {objects(False):.2f}")
    print(f"({time.perf_counter() - started:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
