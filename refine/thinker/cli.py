"""`refine thinker data` and `refine train thinker` (torch, datasets and TRL are imported inside the commands).

Example:
    >>> from typer.testing import CliRunner
    >>> from refine.thinker.cli import app
    >>> "--stage" in CliRunner().invoke(app, ["data", "--help"]).output
    True

    refine thinker data --config thinker_data/shapes                  # generate, then build
    refine thinker data --config thinker_data/shapes --stage build variance_threshold=2.0
    refine thinker first-turn --config thinker_data/shapes-first-turn   # think-before-edit GRPO rows
    refine thinker best-of --config thinker_data/shapes-best-of         # best-of-n SFT rows (keep or rewrite)
    refine train thinker --config thinker_train/shapes-sft --stage sft
    refine train thinker --config thinker_train/shapes-grpo --stage grpo
"""

from __future__ import annotations

import json
from typing import List, Optional

import typer

app = typer.Typer(help="EditThinker: build its SFT/RL data from expert trajectories.", no_args_is_help=True)


@app.command("data")
def data(
    config: str = typer.Option(..., "--config", "-c", help="YAML config or preset name, e.g. thinker_data/shapes."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides, e.g. cases=50 variance_threshold=2.0."),
    stage: str = typer.Option("all", "--stage", help="generate (expert trajectories), build (scores, filters, dataset) or all."),
) -> None:
    """Expert trajectories with several editors -> judge scores -> filter, truncate, split, unroll, balance -> TRL datasets."""
    from refine.config import load_config
    from refine.errors import ConfigError
    from refine.paths import check_output_dir
    from refine.presets import find_preset
    from refine.thinker.data import ThinkerDataConfig, build, generate

    if stage not in ("all", "generate", "build"):
        raise ConfigError(f"--stage {stage!r}: use generate, build or all")
    cfg = load_config(ThinkerDataConfig, find_preset(config), overrides or [])
    check_output_dir(cfg.output_dir, "output_dir")
    if stage in ("all", "generate"):
        written = generate(cfg)
        typer.echo(f"trajectories: {json.dumps(written)}")
    if stage in ("all", "build"):
        summary = build(cfg)
        typer.echo(json.dumps({k: summary[k] for k in ("trajectories", "kept", "discarded", "variance_threshold")}
                              | {name: part["samples"] for name, part in summary["splits"].items()}))
        typer.echo(f"wrote {cfg.output_dir}/dataset (splits sft, rl) and {cfg.output_dir}/summary.json")


@app.command("first-turn")
def first_turn(
    config: str = typer.Option(..., "--config", "-c", help="YAML config or preset name, e.g. thinker_data/shapes-first-turn."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides, e.g. cases=2000 stream_seed=52."),
) -> None:
    """Think-before-edit GRPO rows: the rewrite prompt over each training-stream case's source (split rl)."""
    from refine.config import load_config
    from refine.paths import check_output_dir
    from refine.presets import find_preset
    from refine.thinker.first_turn_rows import FirstTurnConfig, write_first_turn_rows

    cfg = load_config(FirstTurnConfig, find_preset(config), overrides or [])
    check_output_dir(cfg.output_dir, "output_dir")
    typer.echo(json.dumps(write_first_turn_rows(cfg)))
    typer.echo(f"wrote {cfg.output_dir}/dataset (split rl) and {cfg.output_dir}/summary.json")


@app.command("best-of")
def best_of(
    config: str = typer.Option(..., "--config", "-c", help="YAML config or preset name, e.g. thinker_data/shapes-best-of."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides, e.g. thinker=refine/assets/shapes-thinker cases=500."),
) -> None:
    """Best-of-n SFT rows: the thinker's own rewrites or the instruction kept, whichever edits best (split sft; resumable)."""
    from refine.config import load_config
    from refine.paths import check_output_dir
    from refine.presets import find_preset
    from refine.thinker.best_of_rows import BestOfConfig, write_best_of_rows

    cfg = load_config(BestOfConfig, find_preset(config), overrides or [])
    check_output_dir(cfg.output_dir, "output_dir")
    summary = write_best_of_rows(cfg)
    typer.echo(json.dumps({k: v for k, v in summary.items() if k != "by_category"}))
    typer.echo(f"wrote {cfg.output_dir}/dataset (split sft) and {cfg.output_dir}/summary.json")


def train(
    config: str = typer.Option(..., "--config", "-c", help="YAML config or preset name, e.g. thinker_train/shapes-sft."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides, e.g. max_steps=100 learning_rate=1e-4."),
    stage: Optional[str] = typer.Option(None, "--stage", help="sft (SFTTrainer) or grpo (GRPOTrainer with the format, critic and edit rewards); the config's stage when omitted."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in output_dir/checkpoints."),
) -> None:
    """Train EditThinker with TRL, stage sft or grpo (writes checkpoints/, final/, metrics.jsonl, summary.json)."""
    from refine.config import load_config
    from refine.paths import check_output_dir
    from refine.presets import find_preset
    from refine.thinker.train import ThinkerTrainConfig
    from refine.thinker.train import train as run_training
    from refine.training.resume import resume_from_flag

    extra = [f"stage={stage}"] if stage is not None else []
    cfg = load_config(ThinkerTrainConfig, find_preset(config), (overrides or []) + extra)
    check_output_dir(cfg.output_dir, "output_dir")
    cfg.resume_from = resume_from_flag(resume, cfg.resume_from)
    typer.echo(json.dumps(run_training(cfg), indent=2))
