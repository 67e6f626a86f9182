"""Summaries of a comparison: mean and bootstrap 95% interval per entry, per category and overall.

Example:
    >>> from refine.compare.stats import mean_ci, summarize
    >>> round(mean_ci([1.0, 2.0, 3.0, 4.0]).mean, 2)
    2.5
    >>> rows = [{"entry": "a", "category": c, "scores": {"overall": s}, "seconds": 1.0}
    ...         for c, s in [("add", 1.0), ("add", 0.0), ("move", 1.0)]]
    >>> [(r.entry, r.category, r.n, round(r.metrics["overall"].mean, 2)) for r in summarize(rows, ["overall"])]
    [('a', 'all', 3, 0.67), ('a', 'add', 2, 0.5), ('a', 'move', 1, 1.0)]

`paired_deltas` gives each entry's difference to a reference entry on the same (case, seed) pairs,
with its own bootstrap interval: entries of one comparison share cases and seeds, so the paired
difference cancels the case-to-case variance and resolves gaps that overlapping per-entry
intervals cannot (the run-to-run noise the Inline Critic paper warns about for ImgEdit). `difference_ci` is the unpaired version,
for two groups of different cases (e.g. shapes-bench's direct against its indirect phrasings).

Intervals are percentile bootstrap intervals over cases (scipy.stats.bootstrap, fixed seed, so a
rerun prints the same numbers). Percentile rather than BCa because judge scores are often
discrete and tied, where BCa degenerates. With fewer than two cases, or all scores equal, the
interval collapses to the mean. A seed counts as a case: with several seeds each (case, seed)
is one resampled unit.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Iterable, Sequence

import numpy as np

from refine.errors import InputError

ALL = "all"


@dataclass
class MeanCI:
    mean: float
    low: float
    high: float

    def to_json(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high}


@dataclass
class SummaryRow:
    entry: str
    category: str  # a benchmark category, or "all"
    n: int
    metrics: dict[str, MeanCI]
    seconds: float  # mean seconds per case (all turns)
    extra: dict[str, Any] = field(default_factory=dict)
    editor_calls: float | None = None  # mean editor calls per case (all turns), when the rows count them
    oracle: bool = False  # the entry reads ground truth: an upper bound (refine.oracle)

    def to_json(self) -> dict[str, Any]:
        data = {
            "entry": self.entry,
            "category": self.category,
            "n": self.n,
            "seconds_per_case": self.seconds,
            "editor_calls_per_case": self.editor_calls,
            "oracle": self.oracle,
            "metrics": {name: value.to_json() for name, value in self.metrics.items()},
        }
        if "delta" in self.extra:
            data["delta"] = {"vs": self.extra["delta_vs"], "metric": self.extra["delta_metric"], **self.extra["delta"].to_json()}
        return data


def mean_ci(values: Sequence[float], resamples: int = 1000, seed: int = 0) -> MeanCI:
    """Mean of `values` with a percentile-bootstrap 95% interval."""
    data = np.asarray(values, dtype=np.float64)
    mean = float(data.mean()) if data.size else float("nan")
    if data.size < 2 or np.all(data == data[0]):
        return MeanCI(mean, mean, mean)
    from scipy.stats import bootstrap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on degenerate resamples; the interval is still valid
        result = bootstrap(
            (data,), np.mean, confidence_level=0.95, n_resamples=resamples, method="percentile",
            random_state=np.random.default_rng(seed), vectorized=True,
        )
    low, high = result.confidence_interval
    return MeanCI(mean, float(low), float(high))


def cluster_mean_ci(values: Sequence[float], clusters: Sequence[Any], resamples: int = 1000, seed: int = 0) -> MeanCI:
    """Mean of `values` with a 95% interval that resamples whole clusters (e.g. a case's seeds) instead of values.

    The statistic stays the plain mean of the values (a resample's sum over its clusters divided by
    its count of values), so only the interval changes: it widens when values of one cluster are
    correlated. Percentile bootstrap as `mean_ci`; with one cluster, or all values equal, it collapses.

    >>> ci = cluster_mean_ci([0.0, 0.0, 1.0], ["a", "a", "b"])
    >>> round(ci.mean, 4), ci.low <= ci.mean <= ci.high
    (0.3333, True)
    """
    data = np.asarray(values, dtype=np.float64)
    mean = float(data.mean()) if data.size else float("nan")
    names = list(dict.fromkeys(clusters))
    if len(names) < 2 or np.all(data == data[0]):
        return MeanCI(mean, mean, mean)
    index = {name: k for k, name in enumerate(names)}
    which = np.array([index[c] for c in clusters])
    sums = np.bincount(which, weights=data, minlength=len(names))  # (C,)
    counts = np.bincount(which, minlength=len(names)).astype(np.float64)  # (C,)
    from scipy.stats import bootstrap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as in mean_ci
        result = bootstrap(
            (sums, counts), lambda s, c, axis=-1: s.sum(axis=axis) / c.sum(axis=axis), paired=True,
            confidence_level=0.95, n_resamples=resamples, method="percentile",
            random_state=np.random.default_rng(seed), vectorized=True,
        )
    low, high = result.confidence_interval
    return MeanCI(mean, float(low), float(high))


def difference_ci(a: Sequence[float], b: Sequence[float], resamples: int = 1000, seed: int = 0) -> MeanCI:
    """mean(a) - mean(b) of two independent groups, with a percentile-bootstrap 95% interval.

    For groups of different cases (no pairing; `paired_deltas` is for the same cases): each group
    is resampled on its own. With fewer than two values in a group the interval collapses to the
    difference.

    >>> d = difference_ci([0.5, 0.7, 0.6, 0.8], [0.1, 0.3, 0.2, 0.4])
    >>> round(d.mean, 6), 0.1 < d.low < d.mean < d.high < 0.7
    (0.4, True)
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    diff = float(x.mean() - y.mean()) if x.size and y.size else float("nan")
    if x.size < 2 or y.size < 2:
        return MeanCI(diff, diff, diff)
    from scipy.stats import bootstrap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as in mean_ci: degenerate resamples warn, the interval holds
        result = bootstrap(
            (x, y), lambda u, v, axis=-1: u.mean(axis=axis) - v.mean(axis=axis), confidence_level=0.95,
            n_resamples=resamples, method="percentile", random_state=np.random.default_rng(seed), vectorized=True,
        )
    low, high = result.confidence_interval
    return MeanCI(diff, float(low), float(high))


def category_mean_ci(groups: Sequence[Sequence[float]], resamples: int = 1000, seed: int = 0) -> MeanCI:
    """The mean of the per-category means (GEdit-Bench's and ImgEdit's "all"), with a stratified bootstrap.

    Each resample draws every category's values with replacement within that category, so each
    category keeps its weight; empty categories are left out.

    >>> ci = category_mean_ci([[2.0, 4.0], [10.0]])       # (3 + 10) / 2, not (2 + 4 + 10) / 3
    >>> ci.mean, 5.0 <= ci.low <= ci.mean <= ci.high <= 7.0
    (6.5, True)
    """
    arrays = [np.asarray(g, dtype=np.float64) for g in groups if len(g)]
    if not arrays:
        return MeanCI(float("nan"), float("nan"), float("nan"))
    mean = float(np.mean([a.mean() for a in arrays]))
    if all(a.size < 2 or np.all(a == a[0]) for a in arrays):
        return MeanCI(mean, mean, mean)
    rng = np.random.default_rng(seed)
    draws = np.mean([a[rng.integers(0, a.size, size=(resamples, a.size))].mean(axis=1) for a in arrays], axis=0)  # (R,)
    low, high = np.percentile(draws, [2.5, 97.5])
    return MeanCI(mean, float(low), float(high))


def repeat_interval(
    rows: Sequence[dict[str, Any]], metric: str, by_category: bool = False
) -> dict[str, dict[str, Any]]:
    """Per entry, the benchmark-level `metric` of every judge repeat and a t-based 95% interval over repeats.

    `rows` are {"entry", "category", "repeats": [per-repeat score dicts]} (`judge.repeats` > 1); each
    repeat's benchmark score is aggregated as the report aggregates (mean over cases, or of category
    means). This is the judge's run-to-run spread, apart from the case-level bootstrap interval.

    >>> rows = [{"entry": "a", "category": c, "repeats": [{"o": x}, {"o": x + d}]} for c, x, d in [("add", 2.0, 1.0), ("add", 4.0, 1.0), ("move", 10.0, 0.0)]]
    >>> r = repeat_interval(rows, "o", by_category=True)["a"]
    >>> r["values"], r["mean"], r["low"] < 6.5 < r["high"]
    ([6.5, 7.0], 6.75, True)
    """
    from scipy.stats import t as student

    out: dict[str, dict[str, Any]] = {}
    entries = sorted({r["entry"] for r in rows if r.get("repeats")}, key=[r["entry"] for r in rows].index)
    for entry in entries:
        mine = [r for r in rows if r["entry"] == entry and r.get("repeats")]
        count = min(len(r["repeats"]) for r in mine)
        values = []
        for k in range(count):
            by: dict[str, list[float]] = {}
            for r in mine:
                value = r["repeats"][k].get(metric)
                if value is not None:
                    by.setdefault(r["category"] if by_category else ALL, []).append(float(value))
            groups = [np.mean(v) for v in by.values() if v]
            values.append(float(np.mean(groups)) if groups else float("nan"))
        arr = np.asarray(values)
        mean = float(arr.mean())
        half = float(student.ppf(0.975, count - 1) * arr.std(ddof=1) / np.sqrt(count)) if count > 1 else 0.0
        out[entry] = {"values": values, "mean": mean, "low": mean - half, "high": mean + half, "repeats": count}
    return out


def summarize(
    rows: Iterable[dict[str, Any]], metrics: Sequence[str], resamples: int = 1000, by_category: bool = False
) -> list[SummaryRow]:
    """One row per entry for all cases, then one per category (entries and categories in first-seen order).

    `rows` are per-case dicts with `entry`, `category`, `scores` ({metric: value}) and `seconds`,
    optionally `editor_calls` (averaged like `seconds`).
    `by_category`: the "all" row is the mean of the category means (`category_mean_ci`), as
    GEdit-Bench and ImgEdit aggregate, instead of the mean over cases.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    categories: dict[str, list[str]] = {}
    for row in rows:
        groups.setdefault((row["entry"], ALL), []).append(row)
        groups.setdefault((row["entry"], row["category"]), []).append(row)
        seen = categories.setdefault(row["entry"], [])
        if row["category"] not in seen:
            seen.append(row["category"])
    ordered = []
    for entry, cats in categories.items():
        ordered.append((entry, ALL))
        ordered.extend((entry, cat) for cat in sorted(cats))
    summary = []
    for entry, category in ordered:
        members = groups[(entry, category)]
        if by_category and category == ALL:
            values = {
                name: category_mean_ci(
                    [[r["scores"][name] for r in groups[(entry, c)] if r["scores"].get(name) is not None] for c in categories[entry]],
                    resamples,
                )
                for name in metrics
            }
        else:
            values = {
                name: mean_ci([r["scores"][name] for r in members if r["scores"].get(name) is not None], resamples)
                for name in metrics
            }
        seconds = float(np.mean([r["seconds"] for r in members]))
        calls = [r["editor_calls"] for r in members if r.get("editor_calls") is not None]
        summary.append(SummaryRow(entry, category, len(members), values, seconds, editor_calls=float(np.mean(calls)) if calls else None))
    return summary


def item_scores(rows: Iterable[dict[str, Any]], metric: str) -> dict[str, dict[tuple[str, int], float]]:
    """entry -> {(case_id, seed): `metric`} of `cases.jsonl` rows (rows without the metric left out).

    >>> rows = [{"entry": "a", "case_id": "c1", "seed": 0, "scores": {"o": 0.5}},
    ...         {"entry": "a", "case_id": "c1", "seed": 1, "scores": {"o": None}}]
    >>> item_scores(rows, "o")
    {'a': {('c1', 0): 0.5}}
    """
    values: dict[str, dict[tuple[str, int], float]] = {}
    for row in rows:
        value = row["scores"].get(metric)
        if value is not None:
            values.setdefault(row["entry"], {})[(row["case_id"], int(row["seed"]))] = float(value)
    return values


def paired_differences(rows: Iterable[dict[str, Any]], entry: str, reference: str, metric: str) -> dict[tuple[str, int], float]:
    """(case_id, seed) -> `metric`(entry) - `metric`(reference), over the items both entries scored.

    `rows` are `cases.jsonl` rows of a finished `refine compare` run (`benchmarks/paired_delta.py`
    and `refine.compare.difficulty` read them through this).

    >>> rows = [{"entry": e, "case_id": "c1", "seed": 0, "scores": {"o": v}} for e, v in [("base", 0.25), ("new", 0.75)]]
    >>> paired_differences(rows, "new", "base", "o")
    {('c1', 0): 0.5}
    """
    values = item_scores(rows, metric)
    if entry not in values or reference not in values:
        raise InputError(f"no {metric!r} scores for both {entry!r} and {reference!r}; entries with it: {sorted(values)}")
    base = values[reference]
    return {key: value - base[key] for key, value in values[entry].items() if key in base}


def group_differences(
    rows: Iterable[dict[str, Any]], entries: Sequence[str], references: Sequence[str], metric: str
) -> dict[tuple[str, int], float]:
    """(case_id, seed) -> mean of `metric` over `entries` - its mean over `references`, paired per item.

    The way to compare arms trained with several seeds: each arm's training seeds are averaged on
    the same (case, evaluation seed) first, so the interval is over test items, with training-seed
    noise averaged in rather than ignored. Only items that every listed entry scored count.

    >>> rows = [{"entry": e, "case_id": "c1", "seed": 0, "scores": {"o": v}}
    ...         for e, v in [("base", 0.25), ("a.s0", 0.5), ("a.s1", 1.0)]]
    >>> group_differences(rows, ["a.s0", "a.s1"], ["base"], "o")
    {('c1', 0): 0.5}
    """
    rows = list(rows)
    pairs = [paired_differences(rows, entry, reference, metric) for entry in entries for reference in references]
    # the mean over all (entry, reference) pairs of x_e - x_r is mean_e x_e - mean_r x_r
    common = set.intersection(*(set(pair) for pair in pairs))
    return {key: float(np.mean([pair[key] for pair in pairs])) for key in pairs[0] if key in common}


def case_means(items: dict[tuple[str, int], float]) -> dict[str, float]:
    """case_id -> the mean over its seeds of {(case_id, seed): value}: the unit of a per-case interval.

    Seeds of one case share the source scene and the instruction, so they are correlated; averaging
    them first and resampling cases gives the stricter interval.

    >>> case_means({("c1", 0): 0.25, ("c1", 1): 0.75, ("c2", 0): 1.0})
    {'c1': 0.5, 'c2': 1.0}
    """
    groups: dict[str, list[float]] = {}
    for (case, _seed), value in items.items():
        groups.setdefault(case, []).append(value)
    return {case: float(np.mean(values)) for case, values in groups.items()}


def paired_deltas(
    rows: Iterable[dict[str, Any]], metric: str, reference: str, resamples: int = 1000, by_category: bool = False
) -> dict[tuple[str, str], MeanCI]:
    """(entry, category) -> mean and 95% interval of `metric`(entry) - `metric`(reference) over shared items.

    Rows need `entry`, `category`, `key` (the (case, seed) identity) and `scores`; items where
    either side has no score are left out. `by_category`: the "all" delta is the mean of the
    per-category mean deltas (as `summarize` with `by_category`).

    >>> rows = [{"entry": e, "category": "c", "key": k, "scores": {"o": v}}
    ...         for e, k, v in [("a", 1, 0.2), ("a", 2, 0.4), ("b", 1, 0.3), ("b", 2, 0.5)]]
    >>> d = paired_deltas(rows, "o", reference="a")[("b", ALL)]
    >>> round(d.mean, 6), round(d.low, 6), round(d.high, 6)
    (0.1, 0.1, 0.1)
    """
    values: dict[str, dict[Any, tuple[str, float]]] = {}
    for row in rows:
        value = row["scores"].get(metric)
        if value is not None:
            values.setdefault(row["entry"], {})[row["key"]] = (row["category"], float(value))
    base = values.get(reference, {})
    out: dict[tuple[str, str], MeanCI] = {}
    for entry, items in values.items():
        if entry == reference:
            continue
        diffs: dict[str, list[float]] = {}
        for key, (category, value) in items.items():
            if key in base:
                diff = value - base[key][1]
                diffs.setdefault(ALL, []).append(diff)
                diffs.setdefault(category, []).append(diff)
        for category, ds in diffs.items():
            if by_category and category == ALL:
                out[(entry, ALL)] = category_mean_ci([d for c, d in diffs.items() if c != ALL], resamples)
            else:
                out[(entry, category)] = mean_ci(ds, resamples)
    return out


def same_input_pairwise_accuracy(groups: Iterable[Sequence[tuple[float, float]]], min_gap: float = 0.0) -> tuple[float | None, int]:
    """How often a judge orders two outputs of one input as the reference does: (accuracy, pairs counted).

    `groups`: per input, its outputs' (judge score, reference score). Pairs whose reference scores
    differ by less than `min_gap` (or not at all) are left out; a judge tie counts one half; chance
    is 0.5. Unlike a correlation over every output it is not driven by how hard each input is
    (Edit-R1's measure for its score-logit judge). None when no pair counts.

    >>> same_input_pairwise_accuracy([[(0.2, 0.0), (0.9, 1.0)],                 # ordered right: 1
    ...                               [(0.7, 0.5), (0.6, 0.9), (0.6, 0.96)]],   # wrong twice, a tie: 0.5
    ...                              min_gap=0.05)
    (0.375, 4)
    """
    right, pairs = 0.0, 0
    for group in groups:
        for (judged_a, truth_a), (judged_b, truth_b) in combinations(group, 2):
            gap = truth_a - truth_b
            if gap == 0 or abs(gap) < min_gap:
                continue
            pairs += 1
            said = judged_a - judged_b
            right += 0.5 if said == 0 else float((said > 0) == (gap > 0))
    return (right / pairs if pairs else None), pairs
