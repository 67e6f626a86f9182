"""Sample grids: source and edit side by side, one row per request, saved every N iterations.

Example:
    >>> from PIL import Image
    >>> from refine.edit_r1.samples import image_grid
    >>> rows = [[Image.new("RGB", (32, 32), "white"), Image.new("RGB", (32, 32), "red")]] * 3
    >>> image_grid(rows, pad=2).size                    # 2 columns x 3 rows of 32 px, 2 px gaps
    (66, 100)
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image


def image_grid(rows: Sequence[Sequence[Image.Image]], *, pad: int = 2, background: str = "gray") -> Image.Image:
    """Paste `rows` of images (each cell sized like the largest image) into one RGB image."""
    if not rows or not any(rows):
        raise ValueError("image_grid needs at least one image")
    width = max(image.width for row in rows for image in row)
    height = max(image.height for row in rows for image in row)
    columns = max(len(row) for row in rows)
    grid = Image.new("RGB", (columns * width + (columns - 1) * pad, len(rows) * height + (len(rows) - 1) * pad), background)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            grid.paste(image.convert("RGB"), (c * (width + pad), r * (height + pad)))
    return grid


def save_sample_grid(folder: str | Path, iteration: int, sources: Sequence[Image.Image], edits: Sequence[Image.Image], scale: int = 4) -> Path:
    """Write `folder/iter-000010.png`: one row (source, edit) per request, upscaled `scale` times (nearest)."""
    rows = [[s.resize((s.width * scale, s.height * scale), Image.Resampling.NEAREST),
             e.resize((e.width * scale, e.height * scale), Image.Resampling.NEAREST)] for s, e in zip(sources, edits)]
    path = Path(folder) / f"iter-{iteration:06d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(rows).save(path)
    return path
