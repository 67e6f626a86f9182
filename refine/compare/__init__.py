"""Comparison runs across strategies: `refine compare` and its Python API.

Example:
    >>> from refine.compare import CompareConfig, run_compare
    >>> cfg = CompareConfig(benchmark="shapes-bench", entries={"base": {}}, limit=8)
    >>> cfg.benchmark
    {'kind': 'shapes-bench'}
    >>> run = run_compare(cfg)                  # doctest: +SKIP
    >>> print(run.files["html"])                # doctest: +SKIP

| module | what it holds |
|---|---|
| `config.py` | `CompareConfig`, `EntryConfig` (entries = editor spec + refiner specs) |
| `entries.py` | checks before compute, entry fingerprints (cache keys, with a hash of refine's source), oracle labels, building through the registry |
| `runner.py` | `run_compare`: batched, cached, resumable loop over entries x cases x seeds |
| `store.py` | the atomic on-disk cache |
| `stats.py` | means, bootstrap intervals, paired deltas |
| `difficulty.py` | a finished run's paired gain by the reference's difficulty (binned on another seed) and by category: the Inline Critic paper's Fig. 3 (`benchmarks/gain_by_difficulty.py`) |
| `report.py`, `charts.py`, `html.py` | the results folder: JSONL, MD/CSV/JSON, charts, HTML; oracle entries in an "upper bounds" block |
| `benchmarks/` | ShapeEdit splits and GEdit-Bench / ImgEdit / EdiVal folders with their judges |
| `cli.py` | `refine compare` |

`examples/configs/compare/shapes.yaml` is the default that `refine compare` runs. Names are
imported lazily so `refine --help` does not pay for them.
"""

from __future__ import annotations

from refine._lazy import lazy_exports

_EXPORTS = {
    "Benchmark": "refine.compare.benchmarks.base",
    "Case": "refine.compare.benchmarks.base",
    "CaseScore": "refine.compare.benchmarks.base",
    "select_cases": "refine.compare.benchmarks.base",
    "CompareConfig": "refine.compare.config",
    "EntryConfig": "refine.compare.config",
    "Entry": "refine.compare.entries",
    "plan_entries": "refine.compare.entries",
    "CaseRow": "refine.compare.runner",
    "CompareRun": "refine.compare.runner",
    "load_compare_config": "refine.compare.runner",
    "prepare": "refine.compare.runner",
    "run_compare": "refine.compare.runner",
    "DifficultyReport": "refine.compare.difficulty",
    "gain_by_difficulty": "refine.compare.difficulty",
    "MeanCI": "refine.compare.stats",
    "SummaryRow": "refine.compare.stats",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
