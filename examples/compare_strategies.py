"""Run a comparison from Python: entries as compositions, one benchmark, one judge, fixed seeds.

Usage:
    python examples/compare_strategies.py                 # the bundled default (what `refine compare` runs)
    python examples/compare_strategies.py --quick         # 4 cases, 4 sampling steps (what the test runs)
    python examples/compare_strategies.py --out runs/compare/mine

The same run from the shell is `refine compare` (YAML: examples/configs/compare/shapes.yaml).
Rerunning reuses the cached outputs; adding an entry computes only that entry.
"""

from __future__ import annotations

import argparse

from refine.compare import CompareConfig, load_compare_config, run_compare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 cases and 4 sampling steps")
    parser.add_argument("--out", default="runs/compare/example", help="results folder")
    args = parser.parse_args()

    # Start from the bundled default and change what this study needs: here, one extra entry
    # that only changes the thinker's turn budget. Entries are plain data: an editor spec plus
    # refiner specs built through the registry, so any registered strategy can be added.
    config: CompareConfig = load_compare_config("compare/shapes", [f"out_dir={args.out}"])
    data = config.model_dump()
    data["entries"]["+thinker-1turn"] = {"refiners": [{"kind": "thinker", "thinker": "expert", "max_turns": 1}]}
    if args.quick:
        data.update(limit=4, batch_size=4, grid_cases=4, bootstrap=200)
        data["editor"]["flow"] = {"sampler": "euler", "steps": 4}
    run = run_compare(data)

    # The returned object holds everything the report shows. Oracle entries (they read ground
    # truth: the expert thinker, selection by the judge) are upper bounds, so they are left out here.
    deployable = [r for r in run.summary if r.category == "all" and not r.oracle]
    best = max(deployable, key=lambda r: r.metrics["overall"].mean)
    print(f"best deployable entry: {best.entry} (overall {best.metrics['overall'].mean:.3f}); report: {run.files['html']}")
    print(f"computed now: {run.edited} (the rest came from {run.config.out_dir}/cache)")


if __name__ == "__main__":
    main()
