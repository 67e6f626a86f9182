"""`refine shapes ...`: look at ShapeEdit benchmarks, judge an edited image, export a split.

Example:
    >>> from typer.testing import CliRunner
    >>> from refine.shapes.cli import app
    >>> result = CliRunner().invoke(app, ["judge", "--case", "bench-recolor-direct-00", "--edited", "missing.png"])
    >>> result.exit_code != 0
    True

Commands:
* ``refine shapes show --split shapes-bench --n 16 --out grid.png``: a grid of source | instruction
  (with the canonical direct rewrite) | target, images scaled up so they can be read.
* ``refine shapes judge --case bench-recolor-indirect-07 --edited out.png``: the judge's scores and
  breakdown for one edited image.
* ``refine shapes export --split shapes-mt --out folder``: PNGs + JSONL for other tools.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="ShapeEdit: the CPU-scale editing world, its judge and benchmarks.", no_args_is_help=True)


@app.command("show")
def show(
    split: str = typer.Option("shapes-bench", "--split", help="shapes-bench, shapes-mt (report on these), shapes-val or shapes-mt-val (tune on these); turns are listed one per row."),
    n: int = typer.Option(16, "--n", min=1, help="How many cases to draw."),
    out: Path = typer.Option(Path("grid.png"), "--out", help="Where to write the PNG grid."),
    category: Optional[str] = typer.Option(None, "--category", help="Only cases of this category (e.g. recolor)."),
    phrasing: Optional[str] = typer.Option(None, "--phrasing", help="Only 'direct' or 'indirect' cases."),
    scale: int = typer.Option(4, "--scale", min=1, max=16, help="Upscaling of the 32x32 images (nearest neighbour)."),
) -> None:
    """Write a source | instruction | target grid of benchmark cases."""
    from refine.errors import InputError
    from refine.paths import check_output_file
    from refine.shapes.data import iter_cases

    check_output_file(out, "--out", example="grid.png")
    cases = [c for c in iter_cases(split) if (category is None or c.category == category) and (phrasing is None or c.phrasing == phrasing)]
    if not cases:
        raise InputError(f"no cases in {split!r} with category={category!r} phrasing={phrasing!r}; check the filters")
    picked = cases if len(cases) <= n else [cases[i] for i in _picks(len(cases), n)]
    grid = render_grid(picked, scale)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    typer.echo(f"wrote {len(picked)} cases to {out} ({grid.width}x{grid.height})")


def _picks(total: int, n: int) -> list[int]:
    """n indices spread evenly over the split, so a small grid shows every category."""
    return [round(i * (total - 1) / max(1, n - 1)) for i in range(n)]


def render_grid(cases, scale: int = 4):
    """A PIL image with one row per case: source | id, instruction, direct rewrite | target.

    >>> from refine.shapes.data import load_split
    >>> render_grid(load_split("shapes-bench")[:2], scale=2).size
    (560, 176)
    """
    from PIL import Image, ImageDraw

    side = cases[0].size * scale
    text_width, pad, header = 400, 8, 24
    row = side + pad
    grid = Image.new("RGB", (2 * side + text_width + 4 * pad, header + row * len(cases) + pad), "white")
    draw = ImageDraw.Draw(grid)
    font, small = _font(15), _font(12)
    for x, label in ((pad, "source"), (2 * pad + side, "instruction"), (3 * pad + side + text_width, "target")):
        draw.text((x, 4), label, fill="black", font=font)
    for i, case in enumerate(cases):
        y = header + i * row
        grid.paste(case.source_image.resize((side, side), Image.NEAREST), (pad, y))
        grid.paste(case.target_image.resize((side, side), Image.NEAREST), (3 * pad + side + text_width, y))
        x, ty = 2 * pad + side, y
        draw.text((x, ty), f"{case.id}  [{case.category}, {case.phrasing}]", fill=(110, 110, 110), font=small)
        ty += 16
        for line in textwrap.wrap(case.instruction, 44):
            draw.text((x, ty), line, fill="black", font=font)
            ty += 18
        if case.phrasing == "indirect" or case.instruction != case.direct_instruction:
            for line in textwrap.wrap("= " + case.direct_instruction, 56):
                draw.text((x, ty), line, fill=(30, 100, 30), font=small)
                ty += 15
    return grid


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no scalable default font
        return ImageFont.load_default()


@app.command("judge")
def judge(
    case: str = typer.Option(..., "--case", help="Benchmark case id, e.g. bench-recolor-indirect-07 or mt-012-t2."),
    edited: Path = typer.Option(..., "--edited", help="The edited image to score."),
) -> None:
    """Score an edited image against a benchmark case and print the breakdown."""
    from rich.console import Console
    from rich.table import Table

    from refine.images import load_image
    from refine.shapes.data import find_case
    from refine.shapes.judge import judge_edit

    shape_case = find_case(case)
    score = judge_edit(shape_case.source_image, load_image(edited), shape_case)
    console = Console()
    console.print(f"[bold]{shape_case.id}[/bold] ({shape_case.category}, {shape_case.phrasing}): {shape_case.instruction}")
    console.print(f"expected: {shape_case.target.describe()}")
    console.print(f"found:    {score.parsed.describe() if score.parsed else '-'}")
    table = Table("score", "0-1", "0-10")
    table.add_row("IF (instruction following)", f"{score.if_:.3f}", f"{score.gedit_sc:.2f}  (GEdit SC)")
    table.add_row("CC (content consistency)", f"{score.cc:.3f}", f"{10 * score.cc:.2f}")
    table.add_row("PQ (perceptual quality)", f"{score.pq:.3f}", f"{score.gedit_pq:.2f}  (GEdit PQ)")
    table.add_row("overall sqrt(IF*CC)", f"{score.overall:.3f}", f"{score.overall_10:.2f}  (GEdit O {score.gedit_o:.2f})")
    console.print(table)
    for line in score.breakdown:
        console.print(line, highlight=False, markup=False)


@app.command("export")
def export(
    split: str = typer.Option("shapes-bench", "--split", help="shapes-bench, shapes-mt (report on these), shapes-val or shapes-mt-val (tune on these)."),
    out: Path = typer.Option(..., "--out", help="Folder to write images/ and the JSONL into."),
    size: int = typer.Option(32, "--size", help="Image side (32 or 64)."),
) -> None:
    """Export a split as PNGs + JSONL."""
    from refine.paths import check_output_dir
    from refine.shapes.data import export_split

    check_output_dir(out, "--out")
    path = export_split(split, out, size)
    typer.echo(f"wrote {path}")
