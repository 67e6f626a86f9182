"""`refine edit`: one edit (or a group of samples) with a flow-matching backbone, from the shell.

Example:
    >>> from typer.testing import CliRunner
    >>> from refine.cli import app
    >>> result = CliRunner().invoke(app, ["edit", "--help"])
    >>> "--backbone" in result.output and "--group" in result.output
    True

    refine edit --backbone shapes --image in.png --instruction "add a red circle" --out out.png
    refine edit --backbone qwen_image_edit:Qwen/Qwen-Image-Edit-2509 --image in.png \\
        --instruction "make the sky pink" --out grid.png --group 4 --steps 28

The output has the backbone's resolution (its `prepare_images` policy); ``--group N`` > 1 draws N
samples of the same request (seeds derived from ``--seed``) and writes them as one grid image.
torch and the models are imported inside the command, so `refine --help` stays fast.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional

import typer

from refine.errors import InputError


def edit(
    backbone: str = typer.Option(..., "--backbone", help="shapes[:PATH] | qwen_image_edit:PATH | flux_kontext:PATH (folder or hub id)."),
    image: Path = typer.Option(..., "--image", help="Source image (any format/mode Pillow reads)."),
    instruction: str = typer.Option(..., "--instruction", help="The edit instruction."),
    out: Path = typer.Option(..., "--out", help="Output image path (a grid when --group > 1)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampling steps (default: the backbone's, else 28)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Guidance scale (default: the backbone's)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    group: int = typer.Option(1, "--group", min=1, help="Number of samples; > 1 writes a grid."),
    sampler: str = typer.Option("euler", "--sampler", help="euler | dpm | sde."),
    device: Optional[str] = typer.Option(None, "--device", help="torch device (default: cuda if available, else cpu)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Weights dtype for diffusers backbones (default: bfloat16 on cuda, float32 on cpu)."),
    thinker: Optional[str] = typer.Option(None, "--thinker", help="Think-while-Edit: expert (a ShapeEdit case) | vlm:SPEC (checkpoint folder, or http URL optionally followed by #model); prints each turn, saves OUT's .trace folder."),
    max_turns: int = typer.Option(5, "--max-turns", min=1, help="Most edits the --thinker loop may make."),
) -> None:
    """Edit IMAGE with INSTRUCTION using a flow backbone and write the result to OUT."""
    from refine.paths import check_output_dir, check_output_file

    # Check the output paths before torch and the model load (seconds to minutes before any output).
    check_output_file(out, "--out")
    if out.suffix.lower() not in {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}:
        raise InputError(f"--out {out}: unknown image extension {out.suffix!r}; use .png, .jpg or .webp")
    if thinker is not None:
        from refine.thinker.cli_support import default_trace_dir

        check_output_dir(default_trace_dir(out), "--thinker trace folder")

    from refine.backbones import load_backbone
    from refine.images import load_image
    from refine.rollout.group import resolve_sampler, sample_group
    from refine.types import EditRequest

    request = EditRequest(load_image(image, name=str(image)), instruction, seed=seed)  # refuses an empty instruction
    started = time.perf_counter()
    model = load_backbone(backbone, device=device or _default_device(), dtype=dtype)
    config = resolve_sampler(sampler, steps or getattr(model, "default_steps", None) or 28, guidance)
    if thinker is not None:  # refine.thinker owns the loop, the per-turn printing and the trace
        from refine.thinker.cli_support import edit_with_thinker

        picture, used_guidance = edit_with_thinker(model, config, request, thinker, max_turns, out, group)
    else:
        result = sample_group(model, [request], group_size=group, sampler=config, seed=seed, max_batch=max(2, 2 * group))
        images, used_guidance = result.images[0], result.guidance
        picture = images[0] if group == 1 else grid(images)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out)
    typer.echo(
        f"wrote {out} ({picture.width}x{picture.height}, {group} sample{'s' if group > 1 else ''}, "
        f"{config.name} {config.steps} steps, guidance {used_guidance}, {time.perf_counter() - started:.1f} s)"
    )


def grid(images: list, columns: int | None = None):
    """Paste equally sized images left to right, top to bottom (about square).

    >>> from PIL import Image
    >>> grid([Image.new("RGB", (4, 2))] * 3).size
    (8, 4)
    """
    from PIL import Image

    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    width, height = images[0].size
    canvas = Image.new("RGB", (columns * width, rows * height), "white")
    for i, image in enumerate(images):
        canvas.paste(image, ((i % columns) * width, (i // columns) * height))
    return canvas


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
