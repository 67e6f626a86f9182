"""Think-while-Edit on a ShapeEdit split: judge gain over the plain editor, early stopping vs a fixed 5 turns.

Run (the README figures and the early-stopping figures come from this one run):

    python benchmarks/thinker_early_stop.py --cases 540 --out benchmarks/thinker_early_stop.json

The default split, shapes-bench, reports; to choose a stop rule or `--score-threshold`, run on the
tuning split (`--split shapes-val`) and report the chosen rule on shapes-bench.

What it measures, with the bundled ShapeEdit editor (`load_shapes_backbone()`, Euler sampler at
its default steps and guidance) and `ShapeExpertThinker`, every request seeded with its index:

* plain: the editor alone (= turn 1 of every loop: same instruction, same seed);
* early: the loop with its stop rules (expert stop flag, semantic score >= `--score-threshold`,
  unchanged instruction when it would repeat an edit, max 5 turns);
* fixed: exactly 5 turns (`early_stop=False`), best-scored edit kept;
* for each: editor calls per request, judge IF and overall (sqrt(IF * CC)), by phrasing;
* the turn-count curve: IF when the loop may use at most k = 1..5 turns, with and without early
  stopping (read from the two runs' trajectories with the loop's own selection rule: a run with
  max_turns=k makes the same first k edits, so this is what it would return);
* gain retention of early stopping: (early - plain) / (fixed - plain), on IF.

`--vary-seed` re-samples each turn (seed + t - 1); otherwise a turn re-running an instruction
with the same seed reproduces its edit, so the expert stops on an unchanged instruction.
`--edit-from current` chains edits instead of re-editing the source (the expert then asks only
for what is still missing). `--editor random` times a randomly initialised editor of the same
architecture (numbers meaningless; for trying the script before the weights exist).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _harness import load_shapes_editor  # benchmarks/_harness.py


def pick_cases(n: int, split: str = "shapes-bench"):
    """`n` cases of a single-turn ShapeEdit split spread evenly over the (category x phrasing) strata."""
    from refine.shapes.data import load_split

    cases = load_split(split)
    if n >= len(cases):
        return cases
    step = len(cases) / n
    return [cases[int(i * step)] for i in range(n)]


def run(args) -> dict:
    import torch

    from refine.editor import compose
    from refine.shapes.judge import judge_meta
    from refine.thinker.loop import ThinkWhileEdit, best_edit_index
    from refine.thinker.shape_expert import ShapeExpertThinker

    torch.set_num_threads(args.threads)
    cases = pick_cases(args.cases, args.split)
    requests = [case.to_request(seed=i) for i, case in enumerate(cases)]
    editor = load_shapes_editor(args.editor, args.batch_size)
    common = dict(max_turns=args.max_turns, vary_seed=args.vary_seed, edit_from=args.edit_from, score_threshold=args.score_threshold)

    def loop(**settings):
        refined = compose(editor, ThinkWhileEdit(ShapeExpertThinker(), **common, **settings))
        results, start = [], time.perf_counter()
        for i in range(0, len(requests), args.chunk):
            results += refined.edit(requests[i : i + args.chunk])
        return results, time.perf_counter() - start

    early, early_seconds = loop()
    fixed, fixed_seconds = loop(early_stop=False)

    rows = []
    for request, e, f in zip(requests, early, fixed):
        f_edits = [s for s in f.steps if s.kind == "edit"]
        judged = [judge_meta(request.meta, s.image) for s in f_edits]  # every turn of the fixed run
        curve = [judged[best_edit_index([s.scores for s in f_edits[:k]])] for k in range(1, len(f_edits) + 1)]
        e_edits = [s for s in e.steps if s.kind == "edit"]
        e_judged = [judge_meta(request.meta, s.image) for s in e_edits]
        early_curve = [e_judged[best_edit_index([s.scores for s in e_edits[: min(k, len(e_edits))]])] for k in range(1, args.max_turns + 1)]
        e_score = judge_meta(request.meta, e.image)
        rows.append(
            {
                "case": request.meta["case_id"],
                "phrasing": request.meta["phrasing"],
                "category": request.meta["category"],
                "plain_if": judged[0].if_,
                "plain_overall": judged[0].overall,
                "early_if": e_score.if_,
                "early_overall": e_score.overall,
                "early_calls": e.meta["thinker"]["editor_calls"],
                "early_stop_reason": e.meta["thinker"]["stop_reason"],
                "fixed_if": curve[-1].if_,
                "fixed_overall": curve[-1].overall,
                "fixed_calls": f.meta["thinker"]["editor_calls"],
                "curve_if": [c.if_ for c in curve],
                "curve_overall": [c.overall for c in curve],
                "early_curve_if": [c.if_ for c in early_curve],
                "early_curve_calls": [min(k, len(e_edits)) for k in range(1, args.max_turns + 1)],
            }
        )
    return summarize(rows, args, early_seconds, fixed_seconds)


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def summarize(rows: list[dict], args, early_seconds: float, fixed_seconds: float) -> dict:
    groups = {"all": rows}
    for phrasing in ("indirect", "direct"):
        groups[phrasing] = [r for r in rows if r["phrasing"] == phrasing]
    summary = {}
    for name, group in groups.items():
        if not group:
            continue
        stats = {
            "n": len(group),
            "plain_if": mean(r["plain_if"] for r in group),
            "early_if": mean(r["early_if"] for r in group),
            "fixed_if": mean(r["fixed_if"] for r in group),
            "plain_overall": mean(r["plain_overall"] for r in group),
            "early_overall": mean(r["early_overall"] for r in group),
            "fixed_overall": mean(r["fixed_overall"] for r in group),
            "early_calls": mean(r["early_calls"] for r in group),
            "fixed_calls": mean(r["fixed_calls"] for r in group),
            "curve_if": [mean(r["curve_if"][k] for r in group) for k in range(args.max_turns)],
            "curve_overall": [mean(r["curve_overall"][k] for r in group) for k in range(args.max_turns)],
            "early_curve_if": [mean(r["early_curve_if"][k] for r in group) for k in range(args.max_turns)],
            "early_curve_calls": [mean(r["early_curve_calls"][k] for r in group) for k in range(args.max_turns)],
        }
        gain_fixed = stats["fixed_if"] - stats["plain_if"]
        stats["gain_retention_if"] = (stats["early_if"] - stats["plain_if"]) / gain_fixed if gain_fixed > 0 else float("nan")
        stats["calls_fraction"] = stats["early_calls"] / stats["fixed_calls"]
        summary[name] = stats
    stop_reasons: dict[str, int] = {}
    for r in rows:
        stop_reasons[r["early_stop_reason"]] = stop_reasons.get(r["early_stop_reason"], 0) + 1
    return {
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "summary": summary,
        "early_stop_reasons": stop_reasons,
        "seconds": {"early": early_seconds, "fixed": fixed_seconds},
        "rows": rows,
    }


def print_report(result: dict) -> None:
    s = result["settings"]
    print(f"{s.get('split', 'shapes-bench')}, {s['cases']} cases, editor {s['editor']}, thinker shape-expert, max {s['max_turns']} turns, "
          f"vary_seed={s['vary_seed']}, edit_from={s['edit_from']}, score_threshold={s['score_threshold']}")
    header = f"{'subset':<9} {'n':>4} {'plain IF':>9} {'early IF':>9} {'fixed IF':>9} {'calls early':>12} {'calls fixed':>12} {'retention':>10}"
    print(header)
    for name, st in result["summary"].items():
        print(f"{name:<9} {st['n']:>4} {st['plain_if']:>9.3f} {st['early_if']:>9.3f} {st['fixed_if']:>9.3f} "
              f"{st['early_calls']:>12.2f} {st['fixed_calls']:>12.2f} {st['gain_retention_if']:>10.1%}")
    print("overall sqrt(IF*CC): " + ", ".join(
        f"{name} plain {st['plain_overall']:.3f} early {st['early_overall']:.3f} fixed {st['fixed_overall']:.3f}"
        for name, st in result["summary"].items()))
    for name, st in result["summary"].items():
        print(f"turn curve IF ({name}, max turns 1..{len(st['curve_if'])}): fixed " + " ".join(f"{v:.3f}" for v in st["curve_if"])
              + " | early-stop " + " ".join(f"{v:.3f}" for v in st["early_curve_if"])
              + " (calls " + " ".join(f"{v:.2f}" for v in st["early_curve_calls"]) + ")")
    print("early stop reasons:", result["early_stop_reasons"])
    print(f"wall seconds: early {result['seconds']['early']:.0f}, fixed {result['seconds']['fixed']:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=540, help="cases of the split, spread over the strata (max 540)")
    parser.add_argument("--split", default="shapes-bench", help="shapes-bench to report, shapes-val to tune")
    parser.add_argument("--editor", default="bundled", help="'bundled', 'random' (timing only) or a shapes editor folder")
    parser.add_argument("--max-turns", type=int, default=5)
    parser.add_argument("--vary-seed", action="store_true", help="turn t uses seed + t - 1")
    parser.add_argument("--edit-from", choices=["source", "current"], default="source")
    parser.add_argument("--score-threshold", type=float, default=8.0, help="semantic score stop (0-10); < 0 disables it")
    parser.add_argument("--batch-size", type=int, default=32, help="FlowEditor items per forward pass")
    parser.add_argument("--chunk", type=int, default=64, help="requests per loop call (all batched per turn)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: no spin-waiting on shared cores)")
    parser.add_argument("--out", type=Path, default=None, help="write the full result (with per-case rows) as JSON")
    args = parser.parse_args()
    if args.score_threshold < 0:
        args.score_threshold = None
    result = run(args)
    print_report(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
