"""Each entry's gain over the base entry by difficulty and by category (the Inline Critic paper's Fig. 3), from a finished compare run.

Example (the inline critic figures of refine/inline_critic/README.md: 540 shapes-bench cases x 2 seeds):

    python benchmarks/gain_by_difficulty.py runs/eval-critic-bench --bins 5 --out runs/critic-fig3 \\
        --label +inline_critic.bundled="3-stage critic, 200 steps/stage" --label +inline_critic.10x_s0="3-stage critic, 2000 steps/stage"

The run needs >= 2 seeds: a case's difficulty is the base entry's score on the *other* seed(s), so
the bins do not select on the noise of the seed the gain is measured on; the naive same-seed
binning is printed beside it to show the regression-to-the-mean artefact
(`refine.compare.difficulty`). Writes OUT/gain_by_difficulty.{md,json,png} and prints the Markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from refine.compare.difficulty import difficulty_markdown, draw_difficulty, gain_by_difficulty, read_cases
from refine.errors import RefineError


def parse_labels(items: list[str]) -> dict[str, str]:
    """`ENTRY=TEXT` pairs -> {entry: legend label}."""
    labels = {}
    for item in items:
        entry, sep, text = item.partition("=")
        if not sep or not entry or not text:
            raise SystemExit(f"error: --label {item!r}: write ENTRY=TEXT, e.g. --label +lora='LoRA r=8 (old budget)'")
        labels[entry] = text
    return labels


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished refine compare run folder (holds cases.jsonl), >= 2 seeds")
    parser.add_argument("--entries", nargs="+", default=None, help="entries to show (default: all but the reference)")
    parser.add_argument("--reference", default="base", help="the entry gains are measured against and bins are taken from")
    parser.add_argument("--metric", default="overall")
    parser.add_argument("--bins", type=int, default=5, help="quantile bins of the reference's score (3 terciles, 5 quintiles)")
    parser.add_argument("--unit", choices=["item", "case"], default="item",
                        help="bootstrap unit: each (case, seed) item, or each case with all its items (stricter); same mean")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--label", action="append", default=[], metavar="ENTRY=TEXT", help="legend/table label of an entry")
    parser.add_argument("--out", type=Path, default=None, help="folder for the .md, .json and .png (default: RUN/analysis)")
    args = parser.parse_args(argv)
    labels = parse_labels(args.label)
    try:
        rows = read_cases(args.run)
        report = gain_by_difficulty(rows, args.entries, args.reference, args.metric, args.bins, args.unit, args.resamples)
    except RefineError as err:
        raise SystemExit(f"error: {err}") from None
    out = args.out or args.run / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    markdown = difficulty_markdown(report, labels)
    (out / "gain_by_difficulty.md").write_text(markdown + "\n")
    (out / "gain_by_difficulty.json").write_text(json.dumps({**report.to_json(), "labels": labels, "run": str(args.run)}, indent=1))
    png = draw_difficulty(report, out / "gain_by_difficulty.png", labels)
    print(markdown)
    print(f"\nwrote {out / 'gain_by_difficulty.md'}, .json and {png}")


if __name__ == "__main__":
    main()
