"""GEdit-Bench and ImgEdit report "all" as the mean of per-type means; the others as the mean over cases."""

from types import SimpleNamespace

import pytest

from refine.compare.benchmarks.edival import EdiValBench
from refine.compare.benchmarks.gedit import GEditBench
from refine.compare.benchmarks.imgedit import ImgEditBench
from refine.compare.report import summarize_rows
from refine.compare.stats import ALL

# hand-computed table: two entries, type "add" with two cases and type "remove" with one
TABLE = [
    ("base", "c1", "add", 2.0), ("base", "c2", "add", 4.0), ("base", "c3", "remove", 10.0),
    ("+x", "c1", "add", 3.0), ("+x", "c2", "add", 5.0), ("+x", "c3", "remove", 10.0),
]


def _summary(bench_class):
    bench = SimpleNamespace(metrics=("overall",), aggregate=getattr(bench_class, "aggregate", "cases"))
    rows = [SimpleNamespace(entry=e, case_id=c, seed=0, category=k, scores={"overall": v}, seconds=1.0, turns=[])
            for e, c, k, v in TABLE]
    return {(r.entry, r.category): r for r in summarize_rows(bench, rows, resamples=200)}


@pytest.mark.parametrize("bench_class", [GEditBench, ImgEditBench])
def test_all_row_is_the_mean_of_type_means(bench_class):
    summary = _summary(bench_class)
    assert summary[("base", ALL)].metrics["overall"].mean == pytest.approx((3.0 + 10.0) / 2)  # not 16 / 3
    assert summary[("+x", ALL)].metrics["overall"].mean == pytest.approx((4.0 + 10.0) / 2)
    assert summary[("base", "add")].metrics["overall"].mean == pytest.approx(3.0)
    delta = summary[("+x", ALL)].extra["delta"]
    assert delta.mean == pytest.approx((1.0 + 0.0) / 2)  # per-type mean deltas 1 and 0, not 2 / 3
    interval = summary[("base", ALL)].metrics["overall"]
    assert interval.low <= interval.mean <= interval.high


def test_other_benchmarks_keep_the_mean_over_cases():
    summary = _summary(EdiValBench)
    assert summary[("base", ALL)].metrics["overall"].mean == pytest.approx(16.0 / 3)
    assert summary[("+x", ALL)].extra["delta"].mean == pytest.approx(2.0 / 3)
