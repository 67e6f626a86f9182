"""What a resumed run may change: the saved config is compared with the new one before anything is built.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from refine.training.resume import check_resume_config, config_changes
    >>> config_changes({"optim": {"lr": 0.001}, "train": {"iterations": 4}},
    ...                {"optim": {"lr": 0.003}, "train": {"iterations": 8}})
    {'optim.lr': (0.001, 0.003), 'train.iterations': (4, 8)}
    >>> out = Path(tempfile.mkdtemp())
    >>> _ = (out / "config.yaml").write_text("optim:\\n  lr: 0.001\\ntrain:\\n  iterations: 4\\n")
    >>> check_resume_config(out, "optim:\\n  lr: 0.001\\ntrain:\\n  iterations: 8\\n", safe=["train.iterations"])
    {'train.iterations': (4, 8)}
    >>> check_resume_config(out, "optim:\\n  lr: 0.003\\ntrain:\\n  iterations: 8\\n", safe=["train.iterations"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    refine.errors.ConfigError: ... was trained with another config: optim.lr 0.001 -> 0.003; ...

Why: a resumed run restores the optimizer, the schedule and the weights of the saved run. A new
learning rate would be written to `config.yaml` but silently overridden by the restored
optimizer; a new LoRA rank would not fit the saved tensors; a lower iteration count than done
would "finish" without training. So a resume accepts only the fields each trainer lists as safe
(more iterations or steps, logging/evaluation/checkpoint cadence, the output folder's spelling)
and refuses anything else with one line naming every changed field. When safe fields change,
`config.yaml` is rewritten and the change is appended to `config-changes.jsonl`, so what the
run used is never lost.
"""

from __future__ import annotations

import fnmatch
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import yaml

from refine.errors import ConfigError

if TYPE_CHECKING:
    from refine.config import RefineConfig

SAVED = "config.yaml"
HISTORY = "config-changes.jsonl"
_UNSET = "<unset>"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys; lists and scalars are leaves.

    >>> flatten({"a": {"b": 1, "c": [1, 2]}, "d": None})
    {'a.b': 1, 'a.c': [1, 2], 'd': None}
    """
    if not isinstance(data, dict) or (prefix and not data):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_changes(saved: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (saved value, new value) for every leaf that differs (missing: "<unset>")."""
    a, b = flatten(saved), flatten(new)
    return {key: (a.get(key, _UNSET), b.get(key, _UNSET)) for key in sorted(a.keys() | b.keys()) if a.get(key, _UNSET) != b.get(key, _UNSET)}


def check_resume_config(
    output_dir: str | Path,
    config: "RefineConfig | str",
    *,
    safe: Iterable[str] = (),
    progress: tuple[str, int] | None = None,
    write: bool = True,
) -> dict[str, tuple[Any, Any]]:
    """Refuse a resume whose config differs from the saved one outside `safe`; returns the safe changes.

    Args:
        output_dir: the run folder holding `config.yaml` (no file: nothing to compare, {} returned).
        config: the new config (a `RefineConfig`, or its YAML). With a config object, a field the
            saved file lacks (added by a later version of refine) counts as unchanged when the new
            value is the field's default, so runs resume across upgrades.
        safe: dotted keys (fnmatch patterns such as "log.*") that may change on resume.
        progress: (dotted key of the run length, units done): a new length below what the saved run
            has done is an error that says so.
        write: update `config.yaml` and append to `config-changes.jsonl` when safe fields changed
            (False on non-main processes).
    """
    output_dir = Path(output_dir)
    config_yaml = config if isinstance(config, str) else config.to_yaml()
    new = yaml.safe_load(config_yaml) or {}
    # model_construct: the defaults without validation (some configs' defaults alone do not validate)
    defaults = {} if isinstance(config, str) else flatten(yaml.safe_load(type(config).model_construct().to_yaml()) or {})
    if progress is not None:
        key, done = progress
        wanted = flatten(new).get(key)
        if isinstance(wanted, int) and wanted < done:
            raise ConfigError(
                f"{key}={wanted} but the run in {output_dir} has already done {done}; "
                f"set {key} to {done} or more to continue it, or pick a new output folder"
            )
    saved_file = output_dir / SAVED
    if not saved_file.is_file():
        return {}
    saved = yaml.safe_load(saved_file.read_text()) or {}
    changes = {
        key: (old, value) for key, (old, value) in config_changes(saved, new).items()
        if not (old == _UNSET and key in defaults and defaults[key] == value)
    }
    patterns = list(safe)
    refused = {k: v for k, v in changes.items() if not any(fnmatch.fnmatchcase(k, p) for p in patterns)}
    if refused:
        listed = ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, (a, b) in refused.items())
        allowed = ", ".join(patterns) if patterns else "nothing"
        raise ConfigError(
            f"the run in {output_dir} was trained with another config: {listed}; "
            f"a resume may change only {allowed}: set the others back, or pick a new output folder"
        )
    if changes and write:
        saved_file.write_text(config_yaml)
        with open(output_dir / HISTORY, "a") as handle:
            handle.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "changes": {k: list(v) for k, v in changes.items()}}) + "\n")
    return changes


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def resume_from_flag(resume: bool, resume_from: str | None) -> str | None:
    """A config's `resume_from` after the CLI's `--resume` flag: "latest" with the flag, refused beside another value.

    >>> resume_from_flag(True, None), resume_from_flag(False, "runs/x/checkpoints/checkpoint-4")
    ('latest', 'runs/x/checkpoints/checkpoint-4')
    """
    if not resume:
        return resume_from
    if resume_from is not None:
        raise ConfigError(f"--resume given with resume_from={resume_from!r}; use one of the two")
    return "latest"
