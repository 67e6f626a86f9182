"""Bar charts of a comparison summary (matplotlib, PNG): metrics per entry, headline per category.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from refine.compare.stats import MeanCI, SummaryRow
    >>> rows = [SummaryRow("base", "all", 4, {"overall": MeanCI(0.5, 0.3, 0.7)}, 0.1),
    ...         SummaryRow("base", "add", 4, {"overall": MeanCI(0.5, 0.3, 0.7)}, 0.1)]
    >>> out = Path(tempfile.mkdtemp())
    >>> [p.name for p in draw_charts(rows, ["overall"], (0.0, 1.0), out)]
    ['overall.png', 'categories.png']

Error bars are the bootstrap 95% intervals of the summary (asymmetric), so overlapping bars are
visible for what they are: differences the benchmark cannot resolve at this case count. Entries
that are upper bounds (`SummaryRow.oracle`) come last, hatched, labelled "(oracle)".
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from refine.compare.stats import ALL, SummaryRow


def draw_charts(summary: Sequence[SummaryRow], metrics: Sequence[str], scale: tuple[float, float], out_dir: Path) -> list[Path]:
    """Write `overall.png` (every metric, one bar per entry) and `categories.png` (headline metric)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window, never need a display
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    overall = {row.entry: row for row in summary if row.category == ALL}
    order = list(dict.fromkeys(row.entry for row in summary))
    oracles = {row.entry for row in summary if row.oracle}
    entries = [e for e in order if e not in oracles] + [e for e in order if e in oracles]  # upper bounds last
    categories = sorted({row.category for row in summary if row.category != ALL})
    by_cat = {(row.entry, row.category): row for row in summary}

    paths = []
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(metrics) * max(1, len(entries)) * 0.6 + 2), 3.4), dpi=110)
    _grouped_bars(ax, list(metrics), entries, lambda entry, metric: overall[entry].metrics.get(metric), oracles)
    ax.set_ylim(*_limits(scale))
    hatched = "; hatched: upper bounds (oracles)" if oracles else ""
    ax.set_title(f"mean per metric (bars: 95% bootstrap interval{hatched})")
    paths.append(_save(fig, out_dir / "overall.png", plt))

    headline = metrics[0]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(categories) * max(1, len(entries)) * 0.5 + 2), 3.4), dpi=110)
    _grouped_bars(
        ax, categories, entries, lambda entry, cat: by_cat[(entry, cat)].metrics.get(headline) if (entry, cat) in by_cat else None,
        oracles,
    )
    ax.set_ylim(*_limits(scale))
    ax.set_title(f"{headline} per category{' (hatched: upper bounds, oracles)' if oracles else ''}")
    ax.tick_params(axis="x", labelrotation=30)
    paths.append(_save(fig, out_dir / "categories.png", plt))
    return paths


def bar_label(entry: str, oracles: set[str]) -> str:
    """The legend label of an entry: upper bounds say so."""
    return f"{entry} (oracle)" if entry in oracles else entry


def _grouped_bars(ax, groups: list[str], entries: list[str], value, oracles: set[str] = frozenset()) -> None:
    width = 0.8 / max(1, len(entries))
    x = np.arange(len(groups))
    for k, entry in enumerate(entries):
        means, lows, highs = [], [], []
        for group in groups:
            ci = value(entry, group)
            mean = np.nan if ci is None else ci.mean
            means.append(mean)
            lows.append(0.0 if ci is None else mean - ci.low)
            highs.append(0.0 if ci is None else ci.high - mean)
        ax.bar(
            x + (k - (len(entries) - 1) / 2) * width, means, width, yerr=[lows, highs], capsize=3,
            label=bar_label(entry, oracles), hatch="//" if entry in oracles else None,
        )
    ax.set_xticks(x, groups)
    ax.legend(fontsize=8, ncols=min(4, len(entries)), loc="upper left", bbox_to_anchor=(0, -0.18), frameon=False)
    ax.grid(axis="y", alpha=0.3)


def _limits(scale: tuple[float, float]) -> tuple[float, float]:
    low, high = scale
    return low, high + 0.05 * (high - low)


def _save(fig, path: Path, plt) -> Path:
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
