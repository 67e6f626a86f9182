"""The report folder: HTML structure (stdlib parser), inlined images, grid sampling, stats."""

import base64
import io
from html.parser import HTMLParser

import pytest
from PIL import Image

from refine.compare import run_compare
from refine.compare.stats import difference_ci, mean_ci, summarize


class Page(HTMLParser):
    """Collects table rows/cells by table id, images with their cell classes, and outside references."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[dict]]] = {}
        self.current: list[str] = []
        self.cell_class: str | None = None
        self.images: list[tuple[str | None, str, str]] = []  # (table id, cell class, src)
        self.outside: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.current.append(attrs.get("id", ""))
            self.tables.setdefault(self.current[-1], [])
        elif tag == "tr" and self.current:
            self.tables[self.current[-1]].append([])
        elif tag in ("td", "th") and self.current:
            self.cell_class = attrs.get("class")
            self.tables[self.current[-1]][-1].append({"tag": tag, "class": self.cell_class, "text": ""})
        elif tag == "img":
            self.images.append((self.current[-1] if self.current else None, self.cell_class, attrs["src"]))
        if tag in ("script", "link", "iframe") or any(v and str(v).startswith(("http:", "https:", "//")) for v in attrs.values()):
            self.outside.append(tag)

    def handle_endtag(self, tag):
        if tag == "table":
            self.current.pop()

    def handle_data(self, data):
        if self.current and self.tables[self.current[-1]] and self.tables[self.current[-1]][-1]:
            self.tables[self.current[-1]][-1][-1]["text"] += data


def _body(rows):
    return [r for r in rows if r and r[0]["tag"] == "td"]


def test_html_report_shows_the_table_charts_and_a_grid_with_the_failures(toy):
    run = run_compare(toy(cases=16, grid_cases=6))
    page = Page()
    page.feed((run.out_dir / "report.html").read_text())
    assert page.outside == []  # self-contained: no scripts, stylesheets or remote URLs

    summary = _body(page.tables["summary"])
    assert [r[0]["text"] for r in summary] == ["base", "+spell"]
    assert summary[0][1]["text"].startswith("0.500 [")
    assert len(_body(page.tables["categories"])) == 4

    grid = _body(page.tables["grid"])
    assert len(grid) == 6 and all(len(r) == 1 + 2 + 2 for r in grid)  # case | source | target | 2 entries
    base_cells = [r[3] for r in grid]
    assert sum(c["class"] == "fail" for c in base_cells) >= 3  # half the grid: the worst (base fails indirect cases)
    assert all(r[4]["class"] is None for r in grid)  # +spell never fails

    charts = [src for table, _, src in page.images if table is None]
    grid_images = [src for table, _, src in page.images if table == "grid"]
    assert len(charts) == 2 and len(grid_images) == 6 * 4
    for src in charts + grid_images:
        assert src.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert image.size[0] > 0
    assert min(Image.open(io.BytesIO(base64.b64decode(c.split(",", 1)[1]))).size[0] for c in charts) > 300


def test_mean_ci_is_a_deterministic_bootstrap_interval_around_the_mean():
    values = [0.0, 1.0] * 20
    first, second = mean_ci(values, 1000), mean_ci(values, 1000)
    assert first == second and first.mean == pytest.approx(0.5)
    assert 0.3 < first.low < 0.5 < first.high < 0.7
    narrow = mean_ci([0.0, 1.0] * 200, 1000)
    assert narrow.high - narrow.low < first.high - first.low  # more cases, tighter interval
    assert mean_ci([0.7]).low == mean_ci([0.7]).high == 0.7
    assert mean_ci([0.2, 0.2, 0.2]).low == pytest.approx(0.2) == mean_ci([0.2, 0.2, 0.2]).high


def test_difference_ci_resamples_two_independent_groups():
    high, low = [0.6, 0.9] * 20, [0.4, 0.7] * 30  # different sizes: nothing is paired
    first, second = difference_ci(high, low), difference_ci(high, low)
    assert first == second and first.mean == pytest.approx(0.2)
    assert 0.1 < first.low < 0.2 < first.high < 0.3
    level = difference_ci([0.0, 1.0] * 20, [1.0, 0.0] * 20)
    assert level.low < 0 < level.high  # equal means: the interval straddles zero
    assert difference_ci([0.7], [0.2, 0.4]).low == difference_ci([0.7], [0.2, 0.4]).high == pytest.approx(0.4)


def test_summarize_skips_unscored_items_and_orders_rows():
    rows = [
        {"entry": "b", "category": "x", "scores": {"overall": 1.0}, "seconds": 2.0},
        {"entry": "b", "category": "w", "scores": {"overall": None}, "seconds": 4.0},
        {"entry": "a", "category": "x", "scores": {"overall": 0.0}, "seconds": 1.0},
    ]
    summary = summarize(rows, ["overall"], resamples=200)
    assert [(r.entry, r.category, r.n) for r in summary] == [("b", "all", 2), ("b", "w", 1), ("b", "x", 1), ("a", "all", 1), ("a", "x", 1)]
    assert summary[0].metrics["overall"].mean == 1.0 and summary[0].seconds == 3.0
    assert summary[1].metrics["overall"].mean != summary[1].metrics["overall"].mean  # NaN: nothing scored


def test_multi_turn_grid_shows_every_turn(toy):
    run = run_compare(toy(cases=4, turns=2, grid_cases=2))
    page = Page()
    page.feed((run.out_dir / "report.html").read_text())
    grid = _body(page.tables["grid"])
    grid_images = [src for table, _, src in page.images if table == "grid"]
    assert len(grid) == 2 and len(grid_images) == 2 * (1 + 1 + 2 * 2)  # source, target, 2 entries x 2 turns
    assert (run.out_dir / "images" / "base").is_dir() and len(list((run.out_dir / "images" / "base").glob("*_t2.png"))) == 4
