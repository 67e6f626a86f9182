"""Configs: pydantic models that reject typos, loaded from YAML with `key.sub=value` overrides.

Example:
    >>> from pydantic import Field
    >>> from refine.config import RefineConfig, load_config
    >>> class Train(RefineConfig):
    ...     lr: float = Field(1e-4, description="learning rate")
    ...     steps: int = Field(100, description="optimizer steps")
    >>> load_config(Train, overrides=["steps=5"]).steps
    5
    >>> load_config(Train, overrides=["setps=5"])
    Traceback (most recent call last):
    ...
    refine.errors.ConfigError: unknown key 'setps' (did you mean 'steps'?)

Rules every config follows:
* `extra="forbid"`: an unknown key fails, naming the key and the closest valid one.
* Overrides are applied to the YAML data *before* validation; each value is parsed as YAML
  (`steps=5` -> int, `use_ema=false` -> bool, `layers=[1,2]` -> list, `name=null` -> None), then
  pydantic coerces it to the field's type.
* Cross-field rules live in validators whose messages say how to fix the config.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Iterable, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from refine.errors import ConfigError

C = TypeVar("C", bound=BaseModel)


class RefineConfig(BaseModel):
    """Base of every refine config: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or empty file, a syntax error or a non-mapping top level is a `ConfigError`.

    A file that sets nothing (empty, only comments, `{}`) is refused: given as a config it would
    silently run every default, which is never what the person who wrote the file meant.

    >>> import tempfile
    >>> broken = Path(tempfile.mkdtemp()) / "run.yaml"
    >>> _ = broken.write_text("train:\\n  lr: 0.1\\n   steps: 3\\n")
    >>> read_yaml(broken)
    Traceback (most recent call last):
    ...
    refine.errors.ConfigError: ...run.yaml, line 3, column 9: invalid YAML: ...
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(_yaml_error(path, err)) from None
    if data is None or data == {}:
        raise ConfigError(
            f"{path}: the config file sets nothing (it is empty or holds only comments); "
            "write the keys to set, or start from a preset (refine config list)"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def _yaml_error(path: Path, err: yaml.YAMLError) -> str:
    """`path, line L, column C: invalid YAML: cause` from PyYAML's marks (1-based, as editors count)."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    cause = " ".join(str(getattr(err, "problem", None) or str(err).splitlines()[0]).split())
    context = getattr(err, "context", None)
    if context:
        cause += f" ({' '.join(str(context).split())})"
    line = ""
    if mark is not None:
        lines = path.read_text().splitlines()
        if mark.line < len(lines):
            text = lines[mark.line]
            if "\t" in text[: len(text) - len(text.lstrip())]:
                cause += "; the line is indented with a tab, and YAML indents with spaces only"
            line = f": {text.strip()!r}"
    return f"{path}{where}: invalid YAML: {cause}{' in' if line else ''}{line}"


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of `data` with each `a.b.c=value` override set (value parsed as YAML)."""
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw  # not YAML: keep the text as a string
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} holds a {type(child).__name__}, not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_config(cls: type[C], path: str | Path | None = None, overrides: Iterable[str] = (), data: dict | None = None) -> C:
    """Build a `cls` from a YAML file (optional), a dict (optional) and dotted overrides."""
    merged: dict[str, Any] = {}
    if path is not None:
        merged.update(read_yaml(path))
    if data:
        merged.update(data)
    merged = apply_overrides(merged, overrides)
    return validate_config(cls, merged, source=str(path) if path else None)


def validate_config(cls: type[C], data: dict[str, Any], source: str | None = None) -> C:
    """`cls.model_validate(data)` with pydantic's errors turned into one readable `ConfigError`."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(cls, err, source)) from None


def format_validation_error(cls: type[BaseModel], err: ValidationError, source: str | None = None) -> str:
    """One line for all of `err`'s errors: unknown keys with a hint, validator messages as written.

    >>> from pydantic import model_validator
    >>> class Steps(RefineConfig):
    ...     steps: int = 1
    ...     @model_validator(mode="after")
    ...     def positive(self):
    ...         if self.steps < 1:
    ...             raise ValueError(f"steps={self.steps} must be >= 1")
    ...         return self
    >>> try:
    ...     Steps(steps=0)
    ... except ValidationError as err:
    ...     print(format_validation_error(Steps, err, source="run.yaml"))
    run.yaml: steps=0 must be >= 1
    """
    messages = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"])
        # pydantic prefixes what a validator raised with "Value error, ": the message stands alone.
        msg = item["msg"].removeprefix("Value error, ") if item["type"] == "value_error" else item["msg"]
        if item["type"] == "extra_forbidden":
            valid = _fields_at(cls, item["loc"][:-1])
            close = difflib.get_close_matches(str(item["loc"][-1]), valid, n=1, cutoff=0.5)
            hint = f" (did you mean {'.'.join([*map(str, item['loc'][:-1]), close[0]])!r}?)" if close else (
                f" (valid keys: {', '.join(sorted(valid))})" if valid else ""
            )
            messages.append(f"unknown key {loc!r}{hint}")
        elif item["type"] == "missing":
            messages.append(f"missing required key {loc!r}")
        else:
            shown = item.get("input")
            shown = repr(shown) if not isinstance(shown, dict) else "a mapping"
            messages.append(f"{loc or 'config'}: {msg} (got {shown})" if loc else msg)
    prefix = f"{source}: " if source else ""
    return prefix + "; ".join(messages)


def _fields_at(cls: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (nested) model found by following `loc` from `cls`, or [] if unknown."""
    model: Any = cls
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = _model_in(field.annotation)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation) if get_origin(annotation) is not None else ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None
