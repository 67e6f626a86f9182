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

One image (``--group 1``) is drawn with the noise of ``torch.Generator().manual_seed(SEED)`` on the
CPU, exactly as the diffusers pipeline draws it, so with float32 weights ``refine edit --seed N``
gives the pipeline's image for seed N (tests/commands/test_edit_pipeline_parity.py: latents within
1e-4, 8-bit pixels within 1/255). ``--group N`` > 1 draws N samples of the same request, sample g
seeded with `refine.rollout.group.sample_seed(SEED, 0, g)`, and writes them as one grid image.

Defaults beside diffusers' own (`QwenImageEditPipeline` / `QwenImageEditPlusPipeline`,
`FluxKontextPipeline` ``__call__``):

| flag | refine edit (qwen_image_edit) | diffusers Qwen-Image-Edit | refine edit (flux_kontext) | diffusers Kontext |
|---|---|---|---|---|
| --steps | 50 | num_inference_steps=50 | 28 | num_inference_steps=28 |
| --guidance | 4.0 (true CFG) | true_cfg_scale=4.0 | 2.5 (distilled) | guidance_scale=3.5 |
| --negative-prompt | " " (so true CFG is on) | None (true CFG off, a warning) | "" (true CFG off) | None (off) |
| --height/--width | the prepared source's size | the same | refused (see below) | the source's |
| --pixel-area | 1024*1024 | 1024*1024 (hard-coded) | n/a (preferred resolutions) | n/a |
| --variant | None: the plain weight files | variant=None | None | None |
| --dtype | bfloat16 on CUDA, float32 on CPU | float32 unless torch_dtype | same | same |

To reproduce a bare ``pipeline(image=..., prompt=..., generator=torch.Generator().manual_seed(N))``
on Qwen-Image-Edit, pass ``--guidance 1`` (the pipeline skips CFG without a negative prompt);
to reproduce ours with the pipeline, pass ``negative_prompt=" "``. ``--height/--width`` set the
edit's size apart from the source (rounded down to a multiple of 16, as the pipelines round);
the source still conditions at ``--pixel-area``. ``--variant`` is diffusers' ``variant=``
(``fp16`` reads ``*.fp16.safetensors``), not Qwen's edit/plus (read from ``model_index.json``).
The ShapeEdit editor has none of these four options and refuses them.
torch and the models are imported inside the command, so `refine --help` stays fast.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional

import typer

from refine.errors import ConfigError, InputError


def edit(
    backbone: str = typer.Option(..., "--backbone", help="shapes[:PATH] | qwen_image_edit:PATH | flux_kontext:PATH (folder or hub id)."),
    image: Path = typer.Option(..., "--image", help="Source image (any format/mode Pillow reads)."),
    instruction: str = typer.Option(..., "--instruction", help="The edit instruction."),
    out: Path = typer.Option(..., "--out", help="Output image path (a grid when --group > 1)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampling steps (default: the backbone's: 50 Qwen-Image-Edit, 28 Kontext, as the pipelines)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Guidance scale (default: the backbone's)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; one image equals the diffusers pipeline's with torch.Generator().manual_seed(SEED)."),
    negative_prompt: Optional[str] = typer.Option(None, "--negative-prompt", help="CFG negative prompt (default: the backbone's; Qwen-Image-Edit ' ')."),
    variant: Optional[str] = typer.Option(None, "--variant", help="diffusers weight variant, e.g. fp16 (reads *.fp16.safetensors)."),
    height: Optional[int] = typer.Option(None, "--height", help="Height of the edit (qwen_image_edit; default: the prepared source's)."),
    width: Optional[int] = typer.Option(None, "--width", help="Width of the edit (qwen_image_edit; default: the prepared source's)."),
    pixel_area: Optional[int] = typer.Option(None, "--pixel-area", help="Pixel count the source is resized to (qwen_image_edit; default 1024*1024)."),
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

    options = backbone_options(backbone, negative_prompt=negative_prompt, variant=variant, height=height, width=width, pixel_area=pixel_area)

    from refine.backbones import load_backbone
    from refine.images import load_image
    from refine.rollout.flow_editor import FlowEditor
    from refine.rollout.group import resolve_sampler, sample_group
    from refine.types import EditRequest

    request = EditRequest(load_image(image, name=str(image)), instruction, seed=seed)  # refuses an empty instruction
    started = time.perf_counter()
    model = load_backbone(backbone, device=device or _default_device(), dtype=dtype, **options)
    config = resolve_sampler(sampler, steps or getattr(model, "default_steps", None) or 28, guidance)
    if thinker is not None:  # refine.thinker owns the loop, the per-turn printing and the trace
        from refine.thinker.cli_support import edit_with_thinker

        picture, used_guidance = edit_with_thinker(model, config, request, thinker, max_turns, out, group)
    elif group == 1:  # the request's own seed: the pipeline's noise for --seed
        editor = FlowEditor(model, sampler=config, batch_size=2)
        picture, used_guidance = editor.edit([request])[0].image, editor.guidance
    else:
        result = sample_group(model, [request], group_size=group, sampler=config, seed=seed, max_batch=2 * group)
        picture, used_guidance = grid(result.images[0]), result.guidance
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out)
    typer.echo(
        f"wrote {out} ({picture.width}x{picture.height}, {group} sample{'s' if group > 1 else ''}, "
        f"{config.name} {config.steps} steps, guidance {used_guidance}, {time.perf_counter() - started:.1f} s)"
    )


def backbone_options(spec: str, **flags) -> dict:
    """The backbone loader's options for the pipeline-style flags given (None = not given).

    >>> backbone_options("qwen_image_edit:/m", negative_prompt="blurry", variant="fp16", height=None)
    {'negative_prompt': 'blurry', 'weights_variant': 'fp16'}
    >>> backbone_options("shapes", height=64)
    Traceback (most recent call last):
    ...
    refine.errors.ConfigError: --height is not an option of the shapes backbone; it applies to qwen_image_edit (and --negative-prompt, --variant to flux_kontext too)
    """
    kind = spec.partition(":")[0]
    names = {"negative_prompt": "negative_prompt", "variant": "weights_variant", "height": "height", "width": "width", "pixel_area": "pixel_area"}
    allowed = {"qwen_image_edit": set(names), "flux_kontext": {"negative_prompt", "variant"}}.get(kind, set())
    options = {}
    for flag, value in flags.items():
        if value is None:
            continue
        if flag not in allowed:
            raise ConfigError(
                f"--{flag.replace('_', '-')} is not an option of the {kind} backbone; it applies to qwen_image_edit"
                " (and --negative-prompt, --variant to flux_kontext too)"
            )
        options[names[flag]] = value
    return options


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
