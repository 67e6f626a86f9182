"""Quality of ShapeEdit's editor on shapes-bench and shapes-mt, printed as the README's Markdown tables.

Usage:
    python benchmarks/shapes_editor_quality.py                               # bundled editor, all of both splits
    python benchmarks/shapes_editor_quality.py --editor runs/base-shapes/final --bench-limit 90 --mt-limit 30
    python benchmarks/shapes_editor_quality.py --sweep-guidance 1 1.5 2 3 4 --sweep-steps 8 16 --bench-limit 108

Scores come from ShapeEdit's exact judge (`refine.shapes.judge`): per case IF, CC, PQ and
overall O = sqrt(IF * CC); success = IF = 1. Multi-turn: each turn edits the previous output;
success at turn t = every turn up to t fully followed. Sampling: `FlowEditor` with the Euler
sampler, the editor's default steps and guidance (unless swept), one fixed seed per case.
`--bench-limit` keeps an evenly spaced subset with every category and both phrasings.

The tables report on shapes-bench and shapes-mt; the sweeps choose settings, so they run on the
tuning split shapes-val (`--split` overrides either; sweeps before issue 21 ran on shapes-bench).
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--editor", default=None, help="editor folder (default: the bundled refine/assets/shapes-editor)")
    parser.add_argument("--bench-limit", type=int, default=None, help="evenly spaced cases of the split (default: all 540)")
    parser.add_argument("--split", default=None, help="single-turn split (default: shapes-bench; shapes-val for sweeps)")
    parser.add_argument("--mt-limit", type=int, default=None, help="shapes-mt sequences (default: all 120); 0 skips multi-turn")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the editor's)")
    parser.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the editor's)")
    parser.add_argument("--sweep-guidance", type=float, nargs="*", default=None, help="score direct/indirect O at each guidance")
    parser.add_argument("--sweep-steps", type=int, nargs="*", default=None, help="steps to sweep with --sweep-guidance")
    parser.add_argument("--sweep-shift", type=float, nargs="*", default=None, help="timestep shifts to sweep with --sweep-guidance")
    parser.add_argument("--shift", type=float, default=None, help="timestep shift of the schedule (default: the editor's)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--json", default=None, help="also write every figure to this JSON file")
    args = parser.parse_args()

    import torch

    from refine.backbones.shapes import load_shapes_backbone
    from refine.shapes.evaluate import evaluate_editor, evaluate_multiturn, score_cases, summarize_scores
    from refine.compare.stats import difference_ci
    from refine.shapes.data import load_split

    torch.set_num_threads(args.threads)
    backbone = load_shapes_backbone(args.editor)
    split = args.split or ("shapes-val" if args.sweep_guidance else "shapes-bench")
    bench = load_split(split)
    if args.bench_limit:
        bench = [bench[int(i * len(bench) / args.bench_limit)] for i in range(args.bench_limit)]
    report: dict = {"editor": args.editor or "bundled", "split": split, "default_steps": backbone.default_steps,
                    "default_guidance": backbone.default_guidance, "shift": args.shift or backbone.shift}
    started = time.perf_counter()

    if args.sweep_guidance:
        print(f"{split} ({len(bench)} cases)\n")
        print("| steps | shift | guidance | O direct | O indirect | success direct | PQ |")
        print("|---|---|---|---|---|---|---|")
        report["sweep"] = []
        for steps in args.sweep_steps or [args.steps or backbone.default_steps]:
            for shift in args.sweep_shift or [backbone.shift]:
                backbone.shift = shift
                for guidance in args.sweep_guidance:
                    s = evaluate_editor(backbone, bench, steps=steps, guidance=guidance, seed=args.seed, batch_size=64)
                    report["sweep"].append({"steps": steps, "shift": shift, "guidance": guidance, **s})
                    print(f"| {steps} | {shift:g} | {guidance:g} | {s['overall/direct']:.3f} | {s['overall/indirect']:.3f} | "
                          f"{s['success/direct']:.3f} | {s['pq']:.3f} |", flush=True)
        _write(args.json, report)
        return

    if args.shift is not None:
        backbone.shift = args.shift
    steps, guidance = args.steps or backbone.default_steps, args.guidance if args.guidance is not None else backbone.default_guidance
    rows = score_cases(backbone, bench, steps=steps, guidance=guidance, seed=args.seed, batch_size=64)
    s = summarize_scores(rows)
    report["bench"] = s
    print(f"{split} ({s['n']} cases, Euler, {steps} steps, shift {backbone.shift:g}, guidance {guidance:g}, seed {args.seed})\n")
    print("| category | O direct | O indirect | success direct | success indirect |")
    print("|---|---|---|---|---|")
    categories = sorted({r["category"] for r in rows})
    report["bench_rows"] = {}
    for name in [*categories, "all"]:
        groups = {ph: summarize_scores([r for r in rows if r["phrasing"] == ph and name in ("all", r["category"])])
                  for ph in ("direct", "indirect")}
        report["bench_rows"][name] = groups
        label = f"**{name}**" if name == "all" else name
        print(f"| {label} | {groups['direct']['overall']:.2f} | {groups['indirect']['overall']:.2f} | "
              f"{groups['direct']['success']:.2f} | {groups['indirect']['success']:.2f} |")
    print(f"\nall phrasings: O {s['overall']:.3f}, IF {s['if']:.3f}, CC {s['cc']:.3f}, PQ {s['pq']:.3f}, success {s['success']:.3f}")
    # the phrasings are different cases (scenes and edits), so the two groups are resampled independently
    gap = difference_ci([r["overall"] for r in rows if r["phrasing"] == "direct"],
                        [r["overall"] for r in rows if r["phrasing"] == "indirect"], resamples=2000)
    report["direct_minus_indirect"] = gap.to_json()
    print(f"O direct - O indirect: {gap.mean:+.3f} (95% bootstrap interval [{gap.low:+.3f}, {gap.high:+.3f}])")

    if args.mt_limit != 0:
        sequences = load_split("shapes-mt")[: args.mt_limit or None]
        mt = evaluate_multiturn(backbone, sequences, steps=args.steps, guidance=args.guidance, seed=args.seed, batch_size=64)
        report["mt"] = mt
        print(f"\nshapes-mt ({mt['n']} three-turn sequences, each turn edits the previous output)\n")
        print("| turn | success (turns 1..t all right) | IF of turn t | CC vs original |")
        print("|---|---|---|---|")
        for t, (succ, if_, cc) in enumerate(zip(mt["success_at_turn"], mt["if_at_turn"], mt["cc_original_at_turn"]), 1):
            print(f"| {t} | {succ:.2f} | {if_:.2f} | {cc:.2f} |")
    print(f"\n({time.perf_counter() - started:.0f} s)")
    _write(args.json, report)


def _write(path, report) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
