"""The results folder of a comparison: per-case JSONL, images, summaries (MD/CSV/JSON), charts, HTML.

Example (`run_compare` calls `write_report` itself unless told not to; here on the toy world):
    >>> import tempfile
    >>> from refine.compare import run_compare
    >>> from refine.compare.report import write_report
    >>> from rich.console import Console
    >>> from refine.testing.compare_fakes import toy_config
    >>> run = run_compare(toy_config(tempfile.mkdtemp(), cases=4), write_report=False)
    >>> files = write_report(run, console=Console(quiet=True))   # quiet: no printed tables here
    >>> sorted(files)
    ['cases', 'categories_chart', 'config', 'csv', 'html', 'images', 'json', 'markdown', 'overall_chart']

Layout of `out_dir`:
* `cases.jsonl` one line per (entry, case, seed): scores, the instruction given and the one the
  editor executed (a thinker may rewrite it), every turn with its refiner steps, seconds, and
  the output image path relative to `out_dir`;
* `images/<entry>/<case>__s<seed>.png` the final output of each case (multi-turn: `..._t<k>.png`
  for every turn);
* `summary.md`, `summary.csv`, `summary.json` mean and bootstrap 95% interval of every metric,
  per entry over all cases and per entry and category; the benchmark's judge label in the titles,
  and the judge's settings in `summary.json`'s `judge_protocol` (a ShapeEdit run judged by a VLM:
  a note in every table, the console's, the Markdown and the HTML, saying which score is whose);
* `charts/overall.png`, `charts/categories.png` and `report.html` (self-contained page with the
  tables, charts and an image grid: source | target | each entry, half of it the worst cases);
* `difficulty.md`, `charts/difficulty.png` with >= 2 seeds: each entry's paired gain over the first
  by difficulty quantile (the first entry's score on the case's other seed) and by category, the
  Inline Critic paper's Fig. 3 (`refine.compare.difficulty`, `difficulty_view`);
* `config.yaml` the resolved config that produced it; `cache/` the reusable outputs.
The same summary is printed as a rich table.

Oracles apart: an entry whose components read ground truth (`Entry.oracle`, see
`refine.oracle`) is an upper bound, not a strategy a user can deploy. Every table puts such
entries in a separate "upper bounds" block (Markdown and HTML: a table of their own; the console:
a table of its own; CSV: an `oracle` column, their rows last; JSON: `oracle` on each row and the
`upper_bounds` list), and the charts draw them last, hatched, labelled "(oracle)". Each entry's
mean editor calls per case (`editor_calls`: "edit" steps of its turns) is reported next to its
seconds, so a compute-matched baseline can be checked against the entry it matches. How many
(case, seed) edits came from the cache and how many were computed in this run is printed under
the table and kept in `summary.json` (`cache`).
"""

from __future__ import annotations

import csv
import io
import json
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from rich.console import Console
from rich.table import Table

from refine.compare.charts import draw_charts, draw_turn_chart, turn_metrics
from refine.compare.difficulty import DifficultyReport, difficulty_markdown, draw_difficulty, gain_by_difficulty
from refine.compare.entries import source_hash
from refine.compare.html import GridCell, GridRow, render_html
from refine.compare.stats import ALL, SummaryRow, paired_deltas, repeat_interval, summarize
from refine.compare.store import safe_name
from refine.errors import InputError
from refine.images import load_image

if TYPE_CHECKING:  # pragma: no cover
    from refine.compare.benchmarks.base import Benchmark
    from refine.compare.runner import CaseRow, CompareRun


def summarize_rows(
    benchmark: "Benchmark", rows: Sequence["CaseRow"], resamples: int = 1000, oracles: Iterable[str] = ()
) -> list[SummaryRow]:
    """Per entry and category summaries, each non-reference entry with its paired delta to the first entry.

    `oracles` names the entries that read ground truth; their rows get `oracle=True`.
    """
    data = [
        {
            "entry": r.entry, "category": r.category, "scores": r.scores, "seconds": r.seconds, "key": (r.case_id, r.seed),
            "editor_calls": editor_calls(r.turns),
        }
        for r in rows
    ]
    by_category = getattr(benchmark, "aggregate", "cases") == "categories"  # GEdit-Bench, ImgEdit: mean of type means
    summary = summarize(data, list(benchmark.metrics), resamples, by_category)
    oracles = set(oracles)
    for row in summary:
        row.oracle = row.entry in oracles
    if summary:
        reference, headline = summary[0].entry, benchmark.metrics[0]
        deltas = paired_deltas(data, headline, reference, resamples, by_category)
        for row in summary:
            if (row.entry, row.category) in deltas:
                row.extra.update(delta=deltas[(row.entry, row.category)], delta_vs=reference, delta_metric=headline)
    return summary


def editor_calls(turns: Sequence[dict]) -> int:
    """Editor calls of one case: its turns' top-level "edit" steps (a turn with none counts as one call).

    A plain editor records one "edit" step per call, the thinker loop one per turn, `BestOfK` one
    per candidate; what an editor did inside a call sits in that step's `info`.

    >>> editor_calls([{"steps": [{"kind": "edit"}, {"kind": "think"}, {"kind": "edit"}]}, {"steps": []}])
    3
    """
    return sum(max(1, sum(step.get("kind") == "edit" for step in turn.get("steps", []))) for turn in turns)


def cache_counts(run: "CompareRun") -> dict:
    """(case, seed) edits reused from the cache and computed in this run, in total and per entry."""
    total = len(run.cases) * len(run.config.seeds)
    per_entry = {name: {"reused": total - new, "new": new} for name, new in run.edited.items()}
    return {
        "reused": sum(e["reused"] for e in per_entry.values()),
        "new": sum(e["new"] for e in per_entry.values()),
        "per_entry": per_entry,
    }


def reuse_line(run: "CompareRun") -> str:
    """'reused 60, new 12' (edits of (case, seed) pairs; scores follow their edits)."""
    counts = cache_counts(run)
    return f"reused {counts['reused']}, new {counts['new']}"


def write_report(run: "CompareRun", console: Console | None = None) -> dict[str, Path]:
    """Write every report file of `run` into `run.out_dir`, print the table, return the paths."""
    out = run.out_dir
    out.mkdir(parents=True, exist_ok=True)
    bench = run.benchmark
    metrics = list(bench.metrics)
    files: dict[str, Path] = {}

    # 1. images next to the report (the cache may be shared or deleted; the report stands alone)
    images_dir = out / "images"
    if images_dir.exists():
        shutil.rmtree(images_dir)  # ours: rewritten from the cache on every run, no stale entries
    relative: dict[int, list[str]] = {}
    for index, row in enumerate(run.rows):
        folder = images_dir / safe_name(row.entry)
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{safe_name(row.case_id)}__s{row.seed}"
        names = [f"{stem}.png"] if len(row.turn_images) == 1 else [f"{stem}_t{k + 1}.png" for k in range(len(row.turn_images))]
        for source, name in zip(row.turn_images, names):
            shutil.copyfile(source, folder / name)
        relative[index] = [str((folder / name).relative_to(out)) for name in names]
    files["images"] = images_dir

    # 2. per-case JSONL
    with open(out / "cases.jsonl", "w") as handle:
        for index, row in enumerate(run.rows):
            data = row.to_json()
            data["image"] = relative[index][-1]
            data["turn_images"] = relative[index]
            handle.write(json.dumps(data) + "\n")
    files["cases"] = out / "cases.jsonl"

    # 3. summaries
    files["markdown"] = _write(out / "summary.md", summary_markdown(run, metrics))
    files["csv"] = _write(out / "summary.csv", summary_csv(run.summary, metrics))
    files["json"] = _write(out / "summary.json", json.dumps(summary_json(run), indent=1) + "\n")
    files["config"] = _write(out / "config.yaml", run.config.to_yaml())

    # 4. charts and the HTML page
    overall_png, categories_png = draw_charts(run.summary, metrics, bench.scale, out / "charts")
    files["overall_chart"], files["categories_chart"] = overall_png, categories_png
    charts = [overall_png, categories_png]
    if turn_metrics(metrics):  # a multi-turn benchmark: the per-turn view (MT-EditFlow's figure)
        files["turns_chart"] = draw_turn_chart(run.summary, metrics, bench.scale, out / "charts" / "turns.png")
        charts.append(files["turns_chart"])
    view = difficulty_view(run)  # the Inline Critic paper's Fig. 3, binned on another seed
    if view is not None:
        labels = {r.entry: f"{r.entry} (oracle)" for r in run.summary if r.oracle}
        files["difficulty"] = _write(out / "difficulty.md", difficulty_markdown(view, labels) + "\n")
        files["difficulty_chart"] = draw_difficulty(view, out / "charts" / "difficulty.png", labels)
        charts.append(files["difficulty_chart"])
    files["html"] = _write(out / "report.html", _html(run, metrics, charts))

    console = console or Console()
    print_summary(run, console)
    console.print(f"report: [bold]{files['html']}[/bold]  (tables: {files['markdown'].name}, {files['csv'].name}, {files['json'].name}; cases: {files['cases'].name})", highlight=False, soft_wrap=True)
    return files


DIFFICULTY_BINS = 5
"""Quantile bins of the gain-by-difficulty view a run with several seeds gets (`difficulty_view`)."""


def difficulty_view(run: "CompareRun") -> DifficultyReport | None:
    """Every entry's gain over the first by difficulty and category (`refine.compare.difficulty`), or None.

    Written as `difficulty.md` and `charts/difficulty.png` when the run can bin across seeds: >= 2
    seeds, >= 2 entries, and >= 10 (case, seed) items per bin; with fewer the bins are noise.
    `benchmarks/gain_by_difficulty.py` draws the same view with other bins, entries or labels.
    """
    seeds, entries = run.config.seeds, list(dict.fromkeys(r.entry for r in run.rows))
    if len(seeds) < 2 or len(entries) < 2 or len(run.cases) * len(seeds) < 10 * DIFFICULTY_BINS or not run.summary:
        return None
    rows = [{"entry": r.entry, "case_id": r.case_id, "seed": r.seed, "category": r.category, "scores": r.scores} for r in run.rows]
    try:
        return gain_by_difficulty(rows, reference=run.summary[0].entry, metric=run.benchmark.metrics[0],
                                  bins=DIFFICULTY_BINS, resamples=run.config.bootstrap)
    except InputError:  # the reference scored no case on two seeds (failed judgements): an optional view, left out
        return None


def print_summary(run: "CompareRun", console: Console) -> None:
    """The summary as rich tables: metrics per entry, then the headline metric per category; oracles apart."""
    metrics = list(run.benchmark.metrics)
    n_cases = len(run.cases)
    names = [r.entry for r in run.summary if r.category == ALL]
    reference = next((r.entry for r in run.summary), "")
    title = f"{_bench_title(run)}: {n_cases} cases x {len(run.config.seeds)} seed(s); {metrics[0]}: mean [95% CI]"
    for block_title, rows in _blocks([r for r in run.summary if r.category == ALL], title):
        table = Table(title=block_title)
        table.add_column("entry", no_wrap=True, min_width=max(len(n) for n in names) if names else 5)
        for metric in metrics:
            table.add_column(metric, justify="right")
        table.add_column(f"Δ vs {reference}", justify="right")
        table.add_column("calls", justify="right")
        table.add_column("s/case", justify="right")
        table.add_column("run", justify="right")
        for row in rows:
            fresh = run.edited.get(row.entry, 0)
            # the headline carries its interval; the other metrics' intervals are in the files (width)
            cells = [_fmt(row.metrics[metrics[0]])] + [_mean(row, m) for m in metrics[1:]]
            table.add_row(
                row.entry, *cells, _delta(row), _calls(row), f"{row.seconds:.3g}", f"{fresh} new" if fresh else "cached"
            )
        console.print(table)
    console.print(f"cases {reuse_line(run)} (edits read from the cache / computed in this run); calls: editor calls per case", highlight=False)
    protocol = judge_protocol(run)
    if protocol and protocol.get("note"):
        console.print(protocol["note"], highlight=False, soft_wrap=True)
    lookup = {(r.entry, r.category): r for r in run.summary}
    categories = sorted({r.category for r in run.summary if r.category != ALL})
    for block_title, rows in _blocks([r for r in run.summary if r.category == ALL], f"{metrics[0]} per category"):
        entries = [r.entry for r in rows]
        cats = Table(title=block_title)
        cats.add_column("category")
        for entry in entries:
            cats.add_column(entry, justify="right")
        for category in categories:
            cats.add_row(category, *[_mean(lookup.get((e, category)), metrics[0]) for e in entries])
        console.print(cats)


def summary_markdown(run: "CompareRun", metrics: Sequence[str]) -> str:
    lines = [
        f"# {_bench_title(run)}: {len(run.cases)} cases x {len(run.config.seeds)} seed(s)",
        "",
        f"Mean and bootstrap 95% interval; scale {run.benchmark.scale[0]:g}-{run.benchmark.scale[1]:g}.",
        "",
        f"Δ: paired difference of {metrics[0]} to the first entry on the same cases and seeds. "
        "calls: editor calls per case.",
        "",
        f"Cases {reuse_line(run)} (edits read from the cache / computed in this run).",
    ]
    protocol = judge_protocol(run)
    if protocol and protocol.get("note"):  # whose scores these are, before any number is read
        lines += ["", protocol["note"]]
    for title, rows in _blocks(run.summary, ""):
        if title:
            lines += ["", f"## {title}"]
        lines += [
            "",
            "| entry | category | n | " + " | ".join(metrics) + " | Δ | calls | s/case |",
            "|---|---|---:|" + "---:|" * len(metrics) + "---:|---:|---:|",
        ]
        for row in rows:
            lines.append(
                f"| {row.entry} | {row.category} | {row.n} | " + " | ".join(_fmt(row.metrics[m]) for m in metrics)
                + f" | {_delta(row)} | {_calls(row)} | {row.seconds:.3g} |"
            )
    if protocol and protocol.get("repeat_interval"):
        lines += ["", f"Judge repeats ({protocol['repeats']}): {metrics[0]} of each repeat, mean and t 95% interval over repeats", ""]
        for entry, spread in protocol["repeat_interval"].items():
            values = ", ".join(f"{v:.3g}" for v in spread["values"])
            lines.append(f"- {entry}: {spread['mean']:.3g} [{spread['low']:.3g}, {spread['high']:.3g}] ({values})")
    if protocol and protocol.get("official_summary"):
        lines += ["", "Official summary (the benchmark's own table, its scripts' rules):", ""]
        for entry, table in protocol["official_summary"].items():
            lines.append(f"- {entry}: {json.dumps(_rounded(table))}")
    for entry, table in (benchmark_turn_tables(run) or {}).items():  # e.g. EdiVal-O per turn
        lines += ["", f"Per turn, {entry} (the benchmark's own aggregation over cases): "
                  + "; ".join(f"t{k + 1} " + ", ".join(f"{name} {_num(row.get(name))}" for name in ("if", "cc", "o")) for k, row in enumerate(table))]
    for item in run.skipped:
        lines += ["", f"Skipped {item.name}: {item.reason}"]
    return "\n".join(lines) + "\n"


def _rounded(value):
    """`value` with every float rounded to 4 digits (nested dicts and lists), for the markdown summary."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def benchmark_turn_tables(run: "CompareRun") -> dict[str, list[dict]] | None:
    """{entry: per-turn rows} when the benchmark aggregates turns itself (`turn_table`, e.g. EdiVal's O_t = sqrt(IF_t x CC_t))."""
    aggregate = getattr(run.benchmark, "turn_table", None)
    if aggregate is None:
        return None
    per_entry: dict[str, list] = {}
    for row in run.rows:
        if row.turn_scores:
            per_entry.setdefault(row.entry, []).append(row.turn_scores)
    tables = {entry: aggregate(cases) for entry, cases in per_entry.items()}
    return {entry: table for entry, table in tables.items() if table} or None


def summary_csv(summary: Sequence[SummaryRow], metrics: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    deltas = ("delta_mean", "delta_low", "delta_high")
    writer.writerow(
        ["entry", "oracle", "category", "n", *[f"{m}_{s}" for m in metrics for s in ("mean", "low", "high")], *deltas,
         "editor_calls_per_case", "seconds_per_case"]
    )
    for _title, rows in _blocks(summary, ""):  # upper bounds last, flagged in the `oracle` column
        for row in rows:
            values = [f"{getattr(row.metrics[m], s):.6g}" for m in metrics for s in ("mean", "low", "high")]
            delta = row.extra.get("delta")
            delta_values = [f"{getattr(delta, s):.6g}" for s in ("mean", "low", "high")] if delta else ["", "", ""]
            calls = "" if row.editor_calls is None else f"{row.editor_calls:.6g}"
            writer.writerow(
                [row.entry, str(row.oracle).lower(), row.category, row.n, *values, *delta_values, calls, f"{row.seconds:.6g}"]
            )
    return buffer.getvalue()


def _bench_title(run: "CompareRun") -> str:
    """The benchmark's name with its judge label (``gedit [refine-judge]``); our prompts never pass for official ones."""
    label = getattr(run.benchmark, "protocol_label", None)
    return run.benchmark.name if label is None else f"{run.benchmark.name} [{label}]"


def judge_protocol(run: "CompareRun") -> dict | None:
    """The judge scheme's label and settings, and the headline's spread over judge repeats (folder benchmarks).

    A benchmark that describes its judge itself (`judge_report(rows)`: ShapeEdit scored by a VLM
    judge beside its exact judge) gives the rest of the dict, its `note` printed with the tables.
    """
    bench = run.benchmark
    label = getattr(bench, "protocol_label", None)
    if label is None:
        return None
    own = getattr(bench, "judge_report", None)
    if callable(own):
        return {"label": label, **own(run.rows)}
    spec = bench.judge_spec
    rows = [{"entry": r.entry, "category": r.category, "repeats": r.details.get("repeats")} for r in run.rows]
    by_category = getattr(bench, "aggregate", "cases") == "categories"
    official = None
    if spec.scheme == "official" and callable(getattr(bench, "official_summary", None)):
        # the authors' own summary table (KRIS-Bench's groups, MSE-Bench's per-turn rates), per entry
        entries = list(dict.fromkeys(r.entry for r in run.rows))
        official = {entry: bench.official_summary([r for r in run.rows if r.entry == entry]) for entry in entries}
    return {
        "label": label, "scheme": spec.scheme, "judge": spec.backend.get("model"), "temperature": spec.temperature,
        "repeats": spec.repeats,
        "repeat_interval": repeat_interval(rows, bench.metrics[0], by_category) if spec.repeats > 1 else None,
        "official_summary": official,
    }


def summary_json(run: "CompareRun") -> dict:
    return {
        "benchmark": run.benchmark.name,
        "judge_protocol": judge_protocol(run),
        "metrics": list(run.benchmark.metrics),
        "scale": list(run.benchmark.scale),
        "cases": len(run.cases),
        "seeds": run.config.seeds,
        "entries": [r.entry for r in run.summary if r.category == ALL],
        "upper_bounds": [r.entry for r in run.summary if r.category == ALL and r.oracle],
        "code": source_hash(),
        "cache": cache_counts(run),
        "skipped": [{"entry": s.name, "reason": s.reason} for s in run.skipped],
        "summary": [row.to_json() for row in run.summary],
        "turn_tables": benchmark_turn_tables(run),
    }


def is_failure(score: float | None, scale: tuple[float, float]) -> bool:
    """A failure is a headline score in the bottom half of the scale (or no score at all)."""
    low, high = scale
    return score is None or score < low + 0.5 * (high - low)


def grid_sample(run: "CompareRun", count: int) -> list[tuple[str, int]]:
    """`count` (case id, seed) pairs: half the lowest-scoring (worst entry counts), half a seeded sample."""
    headline = run.benchmark.metrics[0]
    worst: dict[tuple[str, int], float] = {}
    order: dict[tuple[str, int], int] = {}
    for row in run.rows:
        key = (row.case_id, row.seed)
        order.setdefault(key, len(order))
        value = row.scores.get(headline)
        value = float("-inf") if value is None else value
        worst[key] = min(worst.get(key, float("inf")), value)
    keys = list(order)
    if count >= len(keys):
        return keys
    by_score = sorted(keys, key=lambda k: (worst[k], order[k]))
    chosen = by_score[: count // 2]
    rest = [k for k in keys if k not in set(chosen)]
    chosen += random.Random(0).sample(rest, count - len(chosen))
    return sorted(chosen, key=lambda k: order[k])


def _html(run: "CompareRun", metrics: list[str], charts: list[Path]) -> str:
    bench = run.benchmark
    overall = [r for r in run.summary if r.category == ALL]
    deployable, upper = [r for r in overall if not r.oracle], [r for r in overall if r.oracle]
    entries = [r.entry for r in overall]
    lookup = {(r.entry, r.category): r for r in run.summary}
    categories = sorted({r.category for r in run.summary if r.category != ALL})
    cases = {c.id: c for c in run.cases}
    rows_by_key = {(r.entry, r.case_id, r.seed): r for r in run.rows}
    grid = []
    for case_id, seed in grid_sample(run, run.config.grid_cases):
        case = cases[case_id]
        cells = []
        for entry in entries:
            row = rows_by_key[(entry, case_id, seed)]
            score = row.scores.get(metrics[0])
            caption = ", ".join(f"{m} {row.scores[m]:.2f}" for m in metrics if row.scores.get(m) is not None)
            rewritten = row.instruction_used if row.instruction_used != row.instruction else ""
            images = [load_image(path) for path in row.turn_images]
            cells.append(GridCell(images, caption, is_failure(score, bench.scale), rewritten))
        label = case_id if len(run.config.seeds) == 1 else f"{case_id} (seed {seed})"
        grid.append(GridRow(label, case.category, case.instruction, case.source_image(), case.target_image(), cells))

    def summary_cells(r: SummaryRow) -> list[str]:
        return [r.entry, *[_fmt(r.metrics[m]) for m in metrics], _delta(r), _calls(r), f"{r.seconds:.3g}"]

    def category_cells(rows: list[SummaryRow]) -> list[list[str]]:
        return [[c, *[_mean(lookup.get((r.entry, c)), metrics[0]) for r in rows]] for c in categories]

    oracle_names = {r.entry for r in upper}
    protocol = judge_protocol(run)
    return render_html(
        title=f"refine compare: {_bench_title(run)}",
        subtitle=f"{len(run.cases)} cases x {len(run.config.seeds)} seed(s); scale {bench.scale[0]:g}-{bench.scale[1]:g}; "
        f"mean [bootstrap 95% interval]; cases {reuse_line(run)}",
        summary_header=["entry", *metrics, f"Δ {metrics[0]} vs {entries[0]}", "calls/case", "s/case"],
        summary_rows=[summary_cells(r) for r in deployable],
        category_header=["category", *[r.entry for r in deployable]],
        category_rows=category_cells(deployable),
        charts=charts,
        grid_columns=[f"{e} (oracle)" if e in oracle_names else e for e in entries],
        grid=grid,
        notes=([protocol["note"]] if protocol and protocol.get("note") else [])
        + [f"skipped entry {s.name}: {s.reason}" for s in run.skipped],
        upper_title=UPPER_BOUNDS,
        upper_summary_rows=[summary_cells(r) for r in upper],
        upper_category_header=["category", *[r.entry for r in upper]],
        upper_category_rows=category_cells(upper),
    )


UPPER_BOUNDS = "Upper bounds (oracles: these entries read ground truth; not deployable strategies)"


def _blocks(rows: Sequence[SummaryRow], title: str) -> list[tuple[str, list[SummaryRow]]]:
    """[(title, deployable rows), (UPPER_BOUNDS, oracle rows)], leaving out an empty block (but never the first)."""
    blocks = [(title, [r for r in rows if not r.oracle])]
    upper = [r for r in rows if r.oracle]
    if upper:
        blocks.append((f"{title}: upper bounds (oracles: read ground truth)" if title else UPPER_BOUNDS, upper))
    return blocks


def _calls(row: SummaryRow) -> str:
    return "-" if row.editor_calls is None else f"{row.editor_calls:.2f}"


def _fmt(ci) -> str:
    if ci.mean != ci.mean:  # NaN: no case of this group could be scored
        return "-"
    return f"{ci.mean:.3f} [{ci.low:.3f}, {ci.high:.3f}]"


def _delta(row: SummaryRow) -> str:
    delta = row.extra.get("delta")
    if delta is None:
        return "-"
    return f"{delta.mean:+.3f} [{delta.low:+.3f}, {delta.high:+.3f}]"


def _mean(row: SummaryRow | None, metric: str) -> str:
    if row is None or row.metrics[metric].mean != row.metrics[metric].mean:
        return "-"
    return f"{row.metrics[metric].mean:.3f}"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
