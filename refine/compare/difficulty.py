"""The gain of each entry over a reference, by difficulty and by category: the Inline Critic paper's Fig. 3.

Example (4 cases x 2 seeds; "new" gains 0.1 on the two cases the reference finds hard):
    >>> from refine.compare.difficulty import gain_by_difficulty
    >>> rows = [{"entry": e, "case_id": f"c{i}", "category": "add", "seed": s, "scores": {"overall": v}}
    ...         for i in range(4) for s in (0, 1)
    ...         for e, v in (("base", i / 4), ("new", i / 4 + (0.1 if i < 2 else 0.0)))]
    >>> report = gain_by_difficulty(rows, bins=2)
    >>> [(g.group, round(g.gain.mean, 3)) for g in report.cross]
    [('1', 0.1), ('2', 0.0)]

The paper bins ImgEdit cases by the backbone's own per-sample score and finds the gain "concentrated
on the hard cases". Binned on the very score the gain is measured against, that finding is partly
built in: a case that scored low on this seed drew bad noise *on this seed*, so any other entry
(even the backbone itself, resampled) scores higher on it, and a high scorer falls back. That is
regression to the mean, and it makes a gain on hard cases out of nothing. Here a case's difficulty
for a gain measured on seed s is the reference's score on the *other* seeds of that case (their
mean with more than two seeds: the less noisy estimate that still shares no noise with seed s), so
the bins cannot select on seed s's luck. The naive same-seed binning is computed beside it on the
same items (`DifficultyReport.same`), so the size of the artefact is visible.

Bins are quantiles of that difficulty over all (case, seed) items the reference scored: equal
counts, bin 1 the hardest. Judge scores tie often (ShapeEdit's O is 0 or 1 for a quarter of the
items), so ties are split across a bin edge by a fixed random order instead of swelling one bin;
each bin reports the range of the difficulty it holds. Categories are ordered hardest first (the
reference's mean), as the paper orders edit types.

Intervals are `refine.compare.stats.mean_ci` (the percentile bootstrap of compare's Δ column and of
`benchmarks/paired_delta.py`) over the paired differences in a group, each (case, seed) item a
unit; or, with `unit="case"`, `cluster_mean_ci`, which resamples cases with all their items in the
group (stricter, as the seeds of a case share its scene and instruction). Both keep the same mean,
the plain mean over the group's items: averaging a case's seeds first would weight a case once
whether one or both of its seeds fell in a bin, and change what is estimated.
Bins are taken as given (the interval does not include the uncertainty of where a bin edge falls).
`benchmarks/gain_by_difficulty.py` is the command line; it writes the Markdown tables and the PNG.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np

from refine.compare.stats import ALL, MeanCI, cluster_mean_ci, item_scores, mean_ci, paired_differences
from refine.errors import InputError

Item = tuple[str, int]  # (case_id, seed)


@dataclass
class GroupGain:
    """One entry's paired gain over the reference on one group of items (a difficulty bin, a category, all)."""

    entry: str
    group: str  # the bin number ("1" = hardest), a category, or "all"
    n: int  # (case, seed) items
    cases: int  # distinct cases among them
    reference_mean: float  # the reference's mean score on these items, on the seed the gain is measured on
    gain: MeanCI
    binned_on: tuple[float, float] | None = None  # (min, max) of the difficulty score in a bin; None for a category


@dataclass
class DifficultyReport:
    """`gain_by_difficulty`'s result: every entry's gain overall, per cross-seed bin, per same-seed bin, per category."""

    metric: str
    reference: str
    entries: list[str]
    seeds: list[int]
    bins: int
    unit: str
    overall: list[GroupGain]
    cross: list[GroupGain]  # binned on the reference's score on the other seeds (the honest view)
    same: list[GroupGain]  # binned on the reference's score on the measured seed (regression to the mean)
    categories: list[GroupGain]  # hardest category first

    def to_json(self) -> dict[str, Any]:
        def rows(groups: list[GroupGain]) -> list[dict[str, Any]]:
            return [{**asdict(g), "gain": g.gain.to_json()} for g in groups]

        return {
            "metric": self.metric, "reference": self.reference, "entries": self.entries, "seeds": self.seeds,
            "bins": self.bins, "unit": self.unit, "overall": rows(self.overall), "cross_seed_bins": rows(self.cross),
            "same_seed_bins": rows(self.same), "categories": rows(self.categories),
        }


def read_cases(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a finished `refine compare` run's `cases.jsonl` (one per entry, case and seed)."""
    path = Path(run_dir) / "cases.jsonl"
    if not path.is_file():
        raise InputError(f"no cases.jsonl in {str(run_dir)!r}; give the results folder (out_dir) of a finished refine compare run")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def difficulty_scores(reference: dict[Item, float], binning: Literal["cross", "same"]) -> dict[Item, float]:
    """(case, seed) -> the score that places the item in a bin: the reference's score on the other seeds or on this one.

    `cross`: the mean of the reference's scores of the same case on every other seed; items whose
    case has no other seed are left out. `same`: the reference's score on the item itself.

    >>> base = {("c", 0): 0.2, ("c", 1): 0.6, ("c", 2): 1.0, ("d", 0): 0.5}
    >>> difficulty_scores(base, "cross")
    {('c', 0): 0.8, ('c', 1): 0.6, ('c', 2): 0.4}
    """
    if binning == "same":
        return dict(reference)
    by_case: dict[str, dict[int, float]] = {}
    for (case, seed), value in reference.items():
        by_case.setdefault(case, {})[seed] = value
    out = {}
    for (case, seed), _ in reference.items():
        others = [v for s, v in by_case[case].items() if s != seed]
        if others:
            out[(case, seed)] = float(np.mean(others))
    return out


def quantile_bins(scores: dict[Item, float], bins: int, seed: int = 0) -> dict[Item, int]:
    """Item -> bin 0..bins-1 by rank of its score (0 = lowest = hardest), equal counts, ties split in a fixed random order.

    >>> quantile_bins({("a", 0): 0.9, ("b", 0): 0.1, ("c", 0): 0.5, ("d", 0): 0.3}, bins=2)
    {('b', 0): 0, ('d', 0): 0, ('c', 0): 1, ('a', 0): 1}
    """
    if bins < 1:
        raise InputError(f"bins={bins}: give at least 1 bin (e.g. 3 for terciles, 5 for quintiles)")
    keys = sorted(scores)
    if len(keys) < bins:
        raise InputError(f"{len(keys)} items cannot fill {bins} bins; use fewer bins")
    values = np.array([scores[k] for k in keys])
    tiebreak = np.random.default_rng(seed).random(len(keys))
    order = np.lexsort((tiebreak, values))  # by value, ties in a fixed random order
    return {keys[i]: rank * bins // len(keys) for rank, i in enumerate(order)}


def group_gain(
    entry: str, group: str, diffs: dict[Item, float], reference: dict[Item, float], unit: str, resamples: int,
    binned_on: tuple[float, float] | None = None,
) -> GroupGain:
    """The mean paired gain on `diffs`'s items with its 95% interval (items resampled, or cases when `unit="case"`)."""
    values = list(diffs.values())
    ci = cluster_mean_ci(values, [case for case, _ in diffs], resamples) if unit == "case" else mean_ci(values, resamples=resamples)
    return GroupGain(entry, group, len(diffs), len({case for case, _ in diffs}),
                     float(np.mean([reference[k] for k in diffs])), ci, binned_on)


def gain_by_difficulty(
    rows: Iterable[dict[str, Any]],
    entries: Sequence[str] | None = None,
    reference: str = "base",
    metric: str = "overall",
    bins: int = 5,
    unit: Literal["item", "case"] = "item",
    resamples: int = 1000,
) -> DifficultyReport:
    """Each entry's paired gain in `metric` over `reference`: overall, per difficulty quantile (cross- and same-seed), per category.

    `rows` are `cases.jsonl` rows (`read_cases`) of a run with >= 2 seeds; `entries` default to every
    entry but the reference, in the run's order.
    """
    if unit not in ("item", "case"):
        raise InputError(f"unit={unit!r}: use 'item' (resample (case, seed) items) or 'case' (resample cases with all their items)")
    rows = list(rows)
    scores = item_scores(rows, metric)
    if reference not in scores:
        raise InputError(f"the run has no {metric!r} scores for the reference {reference!r}; entries: {sorted(scores)}")
    if entries is None:
        entries = [e for e in dict.fromkeys(r["entry"] for r in rows) if e != reference and e in scores]
    missing = [e for e in entries if e not in scores]
    if missing:
        raise InputError(f"entries {missing} have no {metric!r} scores in the run; entries: {sorted(scores)}")
    base = scores[reference]
    category = {(r["case_id"], int(r["seed"])): r["category"] for r in rows if r["entry"] == reference}

    cross_score = difficulty_scores(base, "cross")
    if not cross_score:
        raise InputError(f"the reference {reference!r} has one seed per case; binning on another seed needs "
                         "a run with >= 2 seeds (e.g. seeds=[0,1])")
    same_score = {k: base[k] for k in cross_score}  # the same items, binned on their own seed
    binning = {"cross": quantile_bins(cross_score, bins), "same": quantile_bins(same_score, bins)}
    difficulty = {"cross": cross_score, "same": same_score}

    categories = sorted(set(category.values()), key=lambda c: (np.mean([v for k, v in base.items() if category.get(k) == c]), c))
    report = DifficultyReport(metric, reference, list(entries), sorted({s for _, s in base}), bins, unit, [], [], [], [])
    for entry in entries:
        diffs = paired_differences(rows, entry, reference, metric)
        report.overall.append(group_gain(entry, ALL, diffs, base, unit, resamples))
        for view in ("cross", "same"):
            for b in range(bins):
                members = [k for k, v in binning[view].items() if v == b]
                scored = [difficulty[view][k] for k in members]
                chosen = {k: diffs[k] for k in members if k in diffs}
                if chosen:
                    getattr(report, view).append(group_gain(entry, str(b + 1), chosen, base, unit, resamples,
                                                            (float(min(scored)), float(max(scored)))))
        for cat in categories:
            chosen = {k: d for k, d in diffs.items() if category.get(k) == cat}
            if chosen:
                report.categories.append(group_gain(entry, cat, chosen, base, unit, resamples))
    return report


def _ci(ci: MeanCI) -> str:
    return f"{ci.mean:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}]"


def difficulty_markdown(report: DifficultyReport, labels: dict[str, str] | None = None) -> str:
    """The report as Markdown: overall, cross-seed bins, same-seed bins (naive), categories; one gain column per entry."""
    labels = labels or {}
    names = [labels.get(e, e) for e in report.entries]
    unit = "cases resampled" if report.unit == "case" else "(case, seed) items resampled"
    ref = report.reference

    def table(groups: list[GroupGain], first: str, binned: str | None) -> list[str]:
        cells = {(g.entry, g.group): g for g in groups}
        columns = [first, "n", *([f"{ref}: {binned}", f"{ref} on the measured seed"] if binned else [f"{ref} mean"]), *names]
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for group in dict.fromkeys(g.group for g in groups):
            g0 = next(cells[(e, group)] for e in report.entries if (e, group) in cells)
            label = f"{group} of {report.bins}" if binned else ("all cases" if group == ALL else group)
            span = [f"{g0.binned_on[0]:.3f}-{g0.binned_on[1]:.3f}"] if binned else []
            gains = [_ci(cells[(e, group)].gain) if (e, group) in cells else "-" for e in report.entries]
            lines.append("| " + " | ".join([label, str(g0.n), *span, f"{g0.reference_mean:.3f}", *gains]) + " |")
        return lines

    out = [
        f"Paired gain in {report.metric} over `{ref}`, mean [95% bootstrap interval, {unit}]; seeds {report.seeds}; "
        f"bins: {report.bins} quantiles of {ref}'s score, 1 = hardest.",
        "",
        "**Overall**",
        "",
        *table(report.overall, "cases", None),
        "",
        f"**By difficulty: binned on {ref}'s score on the other seed(s) of the case** (the gain is measured on a seed the bin never saw)",
        "",
        *table(report.cross, "bin", "score on the other seed(s)"),
        "",
        f"**By difficulty, naive: binned on {ref}'s score on the measured seed** (regression to the mean: "
        "hard bins gain and easy bins lose by construction)",
        "",
        *table(report.same, "bin", "score on the measured seed"),
        "",
        f"**By category** (hardest first by {ref}'s mean)",
        "",
        *table(report.categories, "category", None),
    ]
    return "\n".join(out)


def draw_difficulty(report: DifficultyReport, path: str | Path, labels: dict[str, str] | None = None) -> Path:
    """The PNG: gain against cross-seed bin, against same-seed bin (naive), and per category; one line per entry with its interval."""
    import matplotlib  # imported here as in charts.py: the Agg backend is set only when a file is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = labels or {}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    panels = [
        (report.cross, f"binned on {report.reference} on the other seed"),
        (report.same, f"naive: binned on {report.reference} on the same seed"),
        (report.categories, "by category (hardest first)"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), dpi=110, sharey=True, gridspec_kw={"width_ratios": [1, 1, 1.4]})
    spread = 0.5 / max(1, len(report.entries))
    for ax, (groups, title) in zip(axes, panels):
        order = list(dict.fromkeys(g.group for g in groups))
        x = np.arange(len(order))
        for k, entry in enumerate(report.entries):
            mine = {g.group: g for g in groups if g.entry == entry}
            cis = [mine[o].gain if o in mine else None for o in order]
            mean = np.array([np.nan if c is None else c.mean for c in cis])
            low = np.array([0.0 if c is None else c.mean - c.low for c in cis])
            high = np.array([0.0 if c is None else c.high - c.mean for c in cis])
            binned = bool(groups) and groups[0].binned_on is not None
            ax.errorbar(x + (k - (len(report.entries) - 1) / 2) * spread, mean, yerr=[low, high], marker="o",
                        capsize=3, label=labels.get(entry, entry), linestyle="-" if binned else "none")  # categories are not ordered
        if groups and groups[0].binned_on is not None:
            first = {g.group: g for g in groups if g.entry == report.entries[0]}
            ticks = [f"{o}\n{first[o].binned_on[0]:.2f}-{first[o].binned_on[1]:.2f}" for o in order]
            ax.set_xlabel(f"{report.bins}-quantile bin of {report.reference}'s {report.metric} (1 = hardest)")
        else:
            ticks = order
        ax.set_xticks(x, ticks, rotation=30 if groups and groups[0].binned_on is None else 0, fontsize=8)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel(f"paired gain in {report.metric} over {report.reference}")
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.22), frameon=False, ncols=min(3, len(report.entries)))
    unit = "cases resampled" if report.unit == "case" else "items resampled"
    fig.suptitle(f"gain by difficulty and category (bars: 95% bootstrap interval, {unit}; seeds {report.seeds})", fontsize=10)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
