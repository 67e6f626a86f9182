"""A self-contained HTML page for a comparison: summary tables, bar charts and an image grid.

Example:
    >>> from refine.compare.html import GridRow, GridCell, render_html
    >>> from PIL import Image
    >>> red = Image.new("RGB", (8, 8), "red")
    >>> page = render_html(
    ...     title="demo", subtitle="2 cases", summary_header=["entry", "overall"], summary_rows=[["base", "0.50"]],
    ...     category_header=["category", "base"], category_rows=[["add", "0.50"]], charts=[],
    ...     grid_columns=["base"], grid=[GridRow("c1", "add", "add a dot", red, None, [GridCell([red], "0.50", False, "")])],
    ... )
    >>> page.count('src="data:image/png;base64,'), "http" in page
    (2, False)

Everything is inlined (CSS in a <style> block, images and charts as base64 data URIs, no
scripts, no external URL), so the file can be mailed, attached to an issue or opened offline.
Small images (ShapeEdit's 32x32) are scaled up with `image-rendering: pixelated` instead of
being resampled; large ones are shrunk to `THUMBNAIL` pixels before embedding to keep the page
light.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image

THUMBNAIL = 256  # longest side of embedded grid images, in pixels

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px; color: #1b1f24; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
.sub { color: #57606a; margin-top: 0; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.charts img { max-width: 100%; margin: 4px 12px 4px 0; border: 1px solid #d0d7de; }
#grid img { width: 128px; height: auto; image-rendering: pixelated; display: block; border: 3px solid transparent; }
#grid .turns { display: flex; gap: 2px; }
#grid .turns img { width: 72px; }
#grid td.fail img { border-color: #cf222e; }
#grid .cap { font-size: 11px; color: #57606a; max-width: 140px; word-wrap: break-word; }
#grid td.fail .cap { color: #cf222e; font-weight: bold; }
.note { color: #9a6700; }
"""


@dataclass
class GridCell:
    images: list[Image.Image]  # the output of every turn (one for single-turn benchmarks)
    caption: str  # score(s)
    failed: bool
    detail: str  # the instruction used when a refiner rewrote it, or ""


@dataclass
class GridRow:
    case_id: str
    category: str
    instruction: str
    source: Image.Image
    target: Image.Image | None
    cells: list[GridCell]


def render_html(
    *,
    title: str,
    subtitle: str,
    summary_header: Sequence[str],
    summary_rows: Sequence[Sequence[str]],
    category_header: Sequence[str],
    category_rows: Sequence[Sequence[str]],
    charts: Sequence[Path],
    grid_columns: Sequence[str],
    grid: Sequence[GridRow],
    notes: Sequence[str] = (),
    upper_title: str = "Upper bounds",
    upper_summary_rows: Sequence[Sequence[str]] = (),
    upper_category_header: Sequence[str] = (),
    upper_category_rows: Sequence[Sequence[str]] = (),
) -> str:
    """The page as a string (see the module docstring).

    `upper_*` hold the entries that are upper bounds (oracles); when given, they get a section of
    their own (`upper_title`) after the summary and per-category tables.
    """
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1><p class=\"sub\">{esc(subtitle)}</p>",
    ]
    parts += [f'<p class="note">{esc(note)}</p>' for note in notes]
    parts.append("<h2>Summary</h2>")
    parts.append(_table("summary", summary_header, summary_rows))
    parts.append("<h2>Per category</h2>")
    parts.append(_table("categories", category_header, category_rows))
    if upper_summary_rows:
        parts.append(f'<h2 id="upper-bounds">{esc(upper_title)}</h2>')
        parts.append(_table("upper-summary", summary_header, upper_summary_rows))
        parts.append(_table("upper-categories", upper_category_header, upper_category_rows))
    if charts:
        parts.append('<h2>Charts</h2><div class="charts">')
        parts += [f'<img alt="{esc(p.stem)}" src="{_data_uri_file(p)}">' for p in charts]
        parts.append("</div>")
    parts.append("<h2>Examples</h2>")
    parts.append(
        '<p class="sub">A sample of cases: half of them the lowest-scoring ones. '
        "Red frames mark failures (headline score in the bottom half of the scale).</p>"
    )
    has_target = any(row.target is not None for row in grid)
    head = ["case", "source"] + (["target"] if has_target else []) + list(grid_columns)
    parts.append('<table id="grid"><thead><tr>' + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>")
    for row in grid:
        cells = [
            f'<td><b>{esc(row.case_id)}</b><div class="cap">{esc(row.category)}<br>{esc(row.instruction)}</div></td>',
            f'<td>{_img(row.source, "source")}</td>',
        ]
        if has_target:
            cells.append(f'<td>{_img(row.target, "target") if row.target is not None else ""}</td>')
        for column, cell in zip(grid_columns, row.cells):
            cls = ' class="fail"' if cell.failed else ""
            detail = f"<br>executed: {esc(cell.detail)}" if cell.detail else ""
            if len(cell.images) == 1:
                image = _img(cell.images[0], column)
            else:  # multi-turn: every turn's output, in order
                image = '<div class="turns">' + "".join(_img(im, f"{column} turn {k + 1}") for k, im in enumerate(cell.images)) + "</div>"
            cells.append(f'<td{cls}>{image or "(missing)"}<div class="cap">{esc(cell.caption)}{detail}</div></td>')
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table></body></html>")
    return "\n".join(parts)


def _table(table_id: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    esc = html.escape
    out = [f'<table id="{table_id}"><thead><tr>' + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for row in rows:
        tds = [f"<td>{esc(row[0])}</td>"] + [f'<td class="num">{esc(v)}</td>' for v in row[1:]]
        out.append("<tr>" + "".join(tds) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _img(image: Image.Image, alt: str) -> str:
    if max(image.size) > THUMBNAIL:
        image = image.copy()
        image.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _data_uri_file(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()
