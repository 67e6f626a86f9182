"""`refine compare [CONFIG] [key.sub=value ...]`: run a comparison and print where the report is.

Example:
    >>> from typer.testing import CliRunner
    >>> from refine.cli import app
    >>> "Compare strategies" in CliRunner().invoke(app, ["compare", "--help"]).output
    True

With no argument it runs the bundled default, `examples/configs/compare/shapes.yaml`
(shapes-bench with the bundled ShapeEdit editor and every strategy that has a bundled artifact or
needs none). The first argument may be a YAML path or a preset name (`compare/shapes`); if it
looks like an override (`limit=8`) the default config is used and it counts as an override.
Torch and friends are imported inside the command so `refine --help` stays fast.
"""

from __future__ import annotations

from typing import List, Optional

import typer


def compare(
    config: Optional[str] = typer.Argument(
        None, help="Compare config: a YAML path or preset name (default: compare/shapes, the README's first command)."
    ),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides, e.g. limit=8 seeds=[0,1]."),
    out: Optional[str] = typer.Option(None, "--out", help="Results folder (overrides out_dir)."),
    fresh: bool = typer.Option(False, "--fresh", help="Delete the cached outputs in <out_dir>/cache and recompute everything."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bars."),
    layout: Optional[str] = typer.Option(
        None, "--layout", help="With `refine compare export RUN`: gedit|imgedit|edival|kris|rise, the official evaluator's layout."
    ),
) -> None:
    """Compare strategies on a benchmark with one judge and fixed seeds; writes a report folder.

    `refine compare export RUN --layout NAME [--out DIR]` writes the outputs of the finished run in
    RUN where that benchmark's official evaluator reads them (see refine.compare.export).
    """
    if config == "export":
        _export(overrides or [], layout, out)
        return
    from refine.compare.runner import load_compare_config, run_compare

    items = list(overrides or [])
    if config is not None and "=" in config and not config.endswith((".yaml", ".yml")):
        items.insert(0, config)  # `refine compare limit=8`: an override of the default config
        config = None
    if out:
        items.append(f"out_dir={out}")
    if no_progress:
        items.append("progress=false")
    cfg = load_compare_config(config, items)
    if fresh:
        _clear_cache(cfg)
    run = run_compare(cfg)
    typer.echo(f"finished in {run.seconds:.1f} s")


def _export(args: List[str], layout: Optional[str], out: Optional[str]) -> None:
    from refine.compare.export import LAYOUTS, export_run
    from refine.errors import ConfigError

    if len(args) != 1 or layout is None:
        raise ConfigError(f"usage: refine compare export RUN --layout {'|'.join(LAYOUTS)} [--out DIR]")
    result = export_run(args[0], layout, out)
    typer.echo(f"exported {result.files} files for {', '.join(sorted(result.models))} to {result.out} (commands: {result.out / 'EXPORT.md'})")


def _clear_cache(cfg) -> None:
    import shutil
    from pathlib import Path

    from refine.errors import ConfigError

    if cfg.cache_dir is not None:
        raise ConfigError(f"--fresh only clears the default cache (<out_dir>/cache); delete {cfg.cache_dir} yourself")
    shutil.rmtree(Path(cfg.out_dir) / "cache", ignore_errors=True)
