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
    >>> turns = [SummaryRow("base", "all", 4, {f"o_t{k}": MeanCI(0.6 - 0.1 * k, 0.4 - 0.1 * k, 0.7 - 0.1 * k) for k in (1, 2, 3)}, 0.1)]
    >>> draw_turn_chart(turns, [f"o_t{k}" for k in (1, 2, 3)], (0.0, 1.0), out / "turns.png").name
    'turns.png'

A multi-turn benchmark (metrics `o_t1`, `o_t2`, ...) also gets `turns.png` (`draw_turn_chart`):
per entry, each per-turn family (o, if, cc, success) against the turn, the view MT-EditFlow's
paper plots, where the editor's drift over turns shows as a falling line.

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
    entries, oracles = _entries(summary)
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


TURN_FAMILIES = ("o", "if", "cc", "success")
"""Per-turn metric families a multi-turn summary carries (`o_t1`, `if_t1`, ...), drawn by `draw_turn_chart`."""


def turn_metrics(metrics: Sequence[str]) -> dict[str, list[str]]:
    """The per-turn metrics of `metrics`, by family, in turn order (empty for a single-turn benchmark).

    >>> turn_metrics(["overall", "o_t1", "o_t2", "if_t1", "if_t2", "pq"])
    {'o': ['o_t1', 'o_t2'], 'if': ['if_t1', 'if_t2']}
    """
    families: dict[str, list[str]] = {}
    for family in TURN_FAMILIES:
        names = [m for m in metrics if m.startswith(f"{family}_t") and m[len(family) + 2:].isdigit()]
        if names:
            families[family] = sorted(names, key=lambda m: int(m[len(family) + 2:]))
    return families


def draw_turn_chart(summary: Sequence[SummaryRow], metrics: Sequence[str], scale: tuple[float, float], out_path: Path) -> Path:
    """Write one panel per per-turn family (o, if, cc, success): each entry's mean against the turn, with its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = turn_metrics(metrics)
    if not families:
        raise ValueError("draw_turn_chart needs per-turn metrics (o_t1, o_t2, ...)")
    overall = {row.entry: row for row in summary if row.category == ALL}
    entries, oracles = _entries(summary)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(families), figsize=(3.2 * len(families) + 1, 3.2), dpi=110, squeeze=False)
    for ax, (family, names) in zip(axes[0], families.items()):
        turns = np.arange(1, len(names) + 1)
        for entry in entries:
            cis = [overall[entry].metrics.get(name) for name in names]
            means = np.array([np.nan if ci is None else ci.mean for ci in cis])
            low = np.array([0.0 if ci is None else ci.mean - ci.low for ci in cis])
            high = np.array([0.0 if ci is None else ci.high - ci.mean for ci in cis])
            ax.errorbar(turns, means, yerr=[low, high], marker="o", capsize=3, label=bar_label(entry, oracles),
                        linestyle="--" if entry in oracles else "-")
        ax.set_xticks(turns, [f"turn {t}" for t in turns])
        ax.set_ylim(*_limits(scale))
        ax.set_title(family.upper() if family != "success" else "success (turns 1..k)")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.15), frameon=False, ncols=min(4, len(entries)))
    fig.suptitle("per turn (bars: 95% bootstrap interval; dashed: upper bounds, oracles)", fontsize=9)
    return _save(fig, out_path, plt)


def bar_label(entry: str, oracles: set[str]) -> str:
    """The legend label of an entry: upper bounds say so."""
    return f"{entry} (oracle)" if entry in oracles else entry


def _entries(summary: Sequence[SummaryRow]) -> tuple[list[str], set[str]]:
    """The entries in summary order with the upper bounds (oracles) last, and the set of oracles."""
    order = list(dict.fromkeys(row.entry for row in summary))
    oracles = {row.entry for row in summary if row.oracle}
    return [e for e in order if e not in oracles] + [e for e in order if e in oracles], oracles


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
