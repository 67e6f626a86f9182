"""`refine train multiturn`: the command line of MT-EditFlow training.

Example:
    >>> from typer.testing import CliRunner
    >>> from refine.cli import app
    >>> "--config" in CliRunner().invoke(app, ["train", "multiturn", "--help"]).output
    True

The trainer is imported when the command runs, not when the CLI starts: `refine.multiturn.train`
imports torch and diffusers (seconds), which every other `refine` command would otherwise pay.
"""

from __future__ import annotations

import os
from typing import List, Optional

import typer

from refine.config import load_config
from refine.multiturn.config import MultiTurnConfig
from refine.paths import check_output_dir
from refine.presets import find_preset


def cli(
    config: str = typer.Option(..., "--config", "-c", help="YAML config or preset name (e.g. multiturn/shapes = examples/configs/multiturn/shapes.yaml)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides, e.g. train.iterations=20 log.output_dir=runs/x"),
) -> None:
    """Post-train an editor with MT-EditFlow (multi-turn rollouts, IF + CC against the original, broadcast advantages, NFT)."""
    from refine.multiturn.train import train  # lazy: torch start-up cost (see the module docstring)

    settings = load_config(MultiTurnConfig, find_preset(config), overrides or [])
    check_output_dir(settings.log.output_dir, "log.output_dir")  # before any compute
    result = train(settings)
    if os.environ.get("RANK", "0") != "0":  # under torchrun / accelerate launch the main process reports
        return
    if result.eval_history:
        first, last = result.eval_history[0], result.eval_history[-1]
        typer.echo(f"held-out O at turn {settings.eval.turns or settings.rollout.turns}: {first[1]:.4f} (iteration {first[0]}) -> {last[1]:.4f} (iteration {last[0]})")
    if result.stopped_early:
        typer.echo(f"stopped at iteration {result.iterations} (train.max_cpu_seconds); rerun the same command to resume")
    else:
        typer.echo(f"weights: {result.lora_path}")
