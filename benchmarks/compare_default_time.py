"""Time the default `refine compare` from an empty cache (goal: under 5 minutes on 2 CPU cores).

Usage:
    python benchmarks/compare_default_time.py                     # the bundled default
    python benchmarks/compare_default_time.py limit=54            # any override of the default config

Runs the command line exactly as a user would (`refine compare --fresh --out <tmp> [overrides]`) in
a subprocess limited to 2 torch/BLAS threads, then a second time to show the cached rerun. Prints
wall-clock and CPU seconds of both runs, the machine's load average before and after (the figures
only mean something on an otherwise idle machine), the case count and the table the command printed.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"`{' '.join(args)}` failed with exit code {proc.returncode}:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def main() -> None:
    overrides = sys.argv[1:]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "COLUMNS": "120"}
    out = Path(tempfile.mkdtemp(prefix="refine-compare-"))
    command = ["refine", "compare", "--fresh", "--no-progress", "--out", str(out), *overrides]
    load_before = os.getloadavg()
    wall, cpu, printed = run(command, env)
    wall_cached, cpu_cached, _ = run(command[:2] + command[3:], env)  # same, without --fresh
    load_after = os.getloadavg()
    summary = json.loads((out / "summary.json").read_text())
    print(printed)
    print(f"command: {' '.join(command)}")
    print(f"cases: {summary['cases']} x {len(summary['seeds'])} seed(s); entries: {', '.join(summary['entries'])}")
    if summary["skipped"]:
        print("skipped: " + "; ".join(f"{s['entry']} ({s['reason']})" for s in summary["skipped"]))
    print(f"fresh run:  {wall:7.1f} s wall, {cpu:7.1f} s CPU  (goal: < 300 s wall on 2 cores)")
    print(f"cached run: {wall_cached:7.1f} s wall, {cpu_cached:7.1f} s CPU")
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} (1 min)")
    print("within the 5-minute goal" if wall < 300 else "OVER the 5-minute goal")


if __name__ == "__main__":
    main()
