"""Find bundled YAML presets (examples/configs in a checkout, refine/_presets in a wheel).

Example:
    >>> from refine.presets import preset_dirs
    >>> all(p.name in ("configs", "_presets") for p in preset_dirs())
    True

A preset is named by its path below the configs folder without `.yaml`: `edit_r1/shapes` is
`examples/configs/edit_r1/shapes.yaml`. Its folder (`edit_r1`) names the config class through the
registry's `config` category, so `refine config show edit_r1/shapes` knows what to validate against.
"""

from __future__ import annotations

from pathlib import Path

from refine.errors import ConfigError

_PACKAGE = Path(__file__).resolve().parent


def preset_dirs() -> list[Path]:
    candidates = [_PACKAGE / "_presets", _PACKAGE.parent / "examples" / "configs"]
    return [p for p in candidates if p.is_dir()]


def list_presets() -> list[str]:
    names = set()
    for root in preset_dirs():
        names.update(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))
    return sorted(names)


def find_preset(name_or_path: str) -> Path:
    """A YAML path as given, or the bundled preset of that name; `ConfigError` listing the presets otherwise."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for root in preset_dirs():
        candidate = root / f"{name_or_path.removesuffix('.yaml')}.yaml"
        if candidate.is_file():
            return candidate
    import difflib

    names = list_presets()
    close = difflib.get_close_matches(name_or_path, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"no config file or preset named {name_or_path!r}; {hint}presets: {', '.join(names) or '(none)'}")


def config_kind_of(path: Path) -> str:
    """The config kind a preset belongs to: the name of its folder (`edit_r1` for edit_r1/shapes.yaml)."""
    return path.resolve().parent.name
