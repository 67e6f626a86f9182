"""The `refine` command line: thin commands that parse a config and call a library function.

Example:
    >>> from typer.testing import CliRunner
    >>> from refine.cli import app
    >>> CliRunner().invoke(app, ["--version"]).output.strip()
    'refine 0.1.0'

Convention for every command: a `RefineError` (bad input, bad config, backend down) prints one red
line with the reason and exits with code 2, never a traceback; `refine --debug ...` shows it.

Subsystems add commands by import path in the tables below, so importing this module stays cheap
(command modules import torch inside their functions, not at import time).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

import refine
from refine.errors import ConfigError, RefineError

app = typer.Typer(
    name="refine",
    help="Make instruction-based image editors better: train, compose and compare refiners.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(help="Inspect and check configs and presets.", no_args_is_help=True)
train_app = typer.Typer(help="Train a strategy from a config (YAML + key.sub=value overrides).", no_args_is_help=True)
app.add_typer(config_app, name="config")

# name -> "module:typer_app" added as a command group (refine NAME ...).
GROUPS: dict[str, str] = {
    "critic": "refine.inline_critic.cli:critic_app",
    "shapes": "refine.shapes.cli:app",
    "thinker": "refine.thinker.cli:app",
}
# name -> "module:function" added as a top-level command (refine NAME ...).
COMMANDS: dict[str, str] = {
    "compare": "refine.compare.cli:compare",
    "edit": "refine.commands.edit:edit",
}
# name -> "module:function" added under `refine train NAME`.
TRAIN_COMMANDS: dict[str, str] = {
    "base": "refine.shapes.editor_training.train:cli",
    "edit-r1": "refine.edit_r1.train:cli",
    "inline-critic": "refine.inline_critic.train:cli",
    "multiturn": "refine.multiturn.cli:cli",
    "thinker": "refine.thinker.cli:train",
    "vlm": "refine.shapes.vlm.train:cli",
}

err_console = Console(stderr=True)
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"refine {refine.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    _state["debug"] = debug


@config_app.command("show")
def config_show(
    preset: str = typer.Argument(..., help="A YAML path or a bundled preset name such as 'edit_r1/shapes'."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides applied before validation."),
    kind: Optional[str] = typer.Option(None, "--kind", help="Config kind (default: the preset's folder name)."),
) -> None:
    """Print the fully resolved config (defaults filled in, overrides applied) as YAML."""
    typer.echo(_resolve(preset, overrides or [], kind).to_yaml(), nl=False)


@config_app.command("validate")
def config_validate(
    preset: str = typer.Argument(..., help="A YAML path or a bundled preset name."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides applied before validation."),
    kind: Optional[str] = typer.Option(None, "--kind", help="Config kind (default: the preset's folder name)."),
) -> None:
    """Check a config; prints 'ok' or one line naming the problem (exit code 2)."""
    _resolve(preset, overrides or [], kind)
    typer.echo(f"ok: {preset}")


@config_app.command("list")
def config_list() -> None:
    """List bundled presets and the registered component kinds."""
    from refine.presets import list_presets
    from refine.registry import registry

    typer.echo("presets: " + (", ".join(list_presets()) or "(none)"))
    for category in registry.categories():
        typer.echo(f"{category}: " + (", ".join(registry.kinds(category)) or "(none)"))


def _resolve(preset: str, overrides: list[str], kind: str | None):
    from refine.config import load_config
    from refine.presets import config_kind_of, find_preset
    from refine.registry import registry

    path = find_preset(preset)
    kind = kind or config_kind_of(path)
    if kind not in registry.kinds("config") and "." not in kind and ":" not in kind:
        raise ConfigError(
            f"cannot tell which config {path} is: its folder {kind!r} is not a config kind "
            f"({', '.join(registry.kinds('config')) or 'none registered'}); pass --kind"
        )
    return load_config(registry.resolve("config", kind), path, overrides)


def _attach_plugins() -> None:
    from refine.registry import import_object

    for name, target in GROUPS.items():
        app.add_typer(import_object(target), name=name)
    for name, target in COMMANDS.items():
        app.command(name)(import_object(target))
    if TRAIN_COMMANDS:
        for name, target in TRAIN_COMMANDS.items():
            train_app.command(name)(import_object(target))
        app.add_typer(train_app, name="train")


_attach_plugins()


def _click_exception_types() -> dict[str, tuple[type, ...]]:
    """The exception classes of every click in play, grouped by role.

    typer >= 0.29 bundles its own copy of click (`typer._click`) and raises that copy's exceptions,
    while older typer raises the standalone `click`'s; a user may have either, so both are caught
    by role instead of by one module's classes.
    """
    modules = []
    for name in ("typer._click", "click"):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            continue
    exceptions = [getattr(module, "exceptions", None) for module in modules]
    exceptions = [e for e in exceptions if e is not None]

    def collect(attr: str) -> tuple[type, ...]:
        return tuple(getattr(e, attr) for e in exceptions if hasattr(e, attr))

    return {
        "no_args": collect("NoArgsIsHelpError"),
        "usage": collect("UsageError"),
        "click": collect("ClickException"),
        "exit": collect("Exit") + (typer.Exit,),
        "abort": collect("Abort") + (typer.Abort,),
    }


def _usage_line(err: Exception) -> str:
    """One line for a usage error: what was wrong, and the help command of the command it hit."""
    message = err.format_message() if hasattr(err, "format_message") else str(err)
    message = " ".join(message.split())
    ctx = getattr(err, "ctx", None)
    command = ctx.command_path if ctx is not None else "refine"
    return f"{message} (see '{command} --help')"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every failure the user caused ends in one red line and exit 2.

    `RefineError`s (bad input, bad config, backend down) and usage errors (unknown option, missing
    argument, bad value) print one line; bare `refine` or a group without a command prints its help;
    both exit with code 2. `refine --debug ...` re-raises instead, with the traceback.
    """
    kinds = _click_exception_types()
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        code = app(args=args, prog_name="refine", standalone_mode=False)
        if isinstance(code, int) and code:  # non-standalone click returns Exit codes instead of raising
            sys.exit(code)
    except RefineError as err:
        if debug:
            raise
        _error(str(err))
        sys.exit(2)
    except kinds["no_args"] as err:  # bare `refine` or `refine config`: show what there is to run
        typer.echo(err.ctx.get_help() if getattr(err, "ctx", None) is not None else "see 'refine --help'")
        sys.exit(2)
    except kinds["usage"] as err:
        if debug:
            raise
        _error(_usage_line(err))
        sys.exit(2)
    except kinds["exit"] as err:
        sys.exit(getattr(err, "exit_code", 0))
    except kinds["abort"]:
        err_console.print("[red]aborted[/red]")
        sys.exit(130)
    except kinds["click"] as err:
        if debug:
            raise
        _error(" ".join(err.format_message().split()))
        sys.exit(getattr(err, "exit_code", 1) or 1)
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/red]")
        sys.exit(130)


def _error(line: str) -> None:
    err_console.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True, markup=True)
