"""`refine critic ...`: the inline critic's analysis commands (torch is imported inside the commands).

Example:
    >>> from typer.testing import CliRunner
    >>> from refine.inline_critic.cli import critic_app
    >>> "analyze" in CliRunner().invoke(critic_app, ["--help"]).output
    True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

critic_app = typer.Typer(help="Inline critic: probing study and alignment analyses.", no_args_is_help=True)


@critic_app.command("analyze")
def analyze(
    run: Path = typer.Argument(..., help="Training output_dir (holds stage3.safetensors or stage2/stage1 and summary.json)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="The training YAML (default: run/config.yaml)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where numbers and plots go (default: run/analysis)."),
    cases: int = typer.Option(64, "--cases", help="Held-out ShapeEdit/validation cases to analyse."),
    steps: int = typer.Option(8, "--steps", help="Denoising steps of the probing study (its time grid)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides of the training config."),
) -> None:
    """Probing study (Spearman of each probe layer's error map with the final layer's, per layer and
    step) and alignment experiments A/B/C; writes analysis.json and PNG plots."""
    from refine.config import load_config
    from refine.inline_critic.analysis import run_analysis
    from refine.inline_critic.config import InlineCriticConfig

    from refine.paths import check_output_dir
    from refine.presets import find_preset

    if config is not None:  # named by the user: it must exist (a preset name works too)
        cfg = load_config(InlineCriticConfig, find_preset(str(config)), overrides or [])
    else:
        saved = run / "config.yaml"
        cfg = load_config(InlineCriticConfig, saved if saved.is_file() else None, overrides or [])
    check_output_dir(output or run / "analysis", "--output")
    report = run_analysis(cfg, run, output or run / "analysis", cases=cases, steps=steps)
    typer.echo(json.dumps(report["summary"], indent=2))
