"""Entries: check every strategy of a comparison before compute, fingerprint it, build it on demand.

Example:
    >>> from refine.compare.config import CompareConfig
    >>> from refine.compare.entries import plan_entries
    >>> cfg = CompareConfig(benchmark="shapes-bench", editor={"kind": "collections:OrderedDict"},
    ...                     entries={"base": {}, "lora": {"refiners": [{"kind": "builtins:dict", "path": "/no/lora"}],
    ...                                                   "optional": True}})
    >>> entries, skipped = plan_entries(cfg)
    >>> [e.name for e in entries], skipped[0].name, skipped[0].reason
    (['base'], 'lora', "refiner 'builtins:dict': artifact path '/no/lora' does not exist")

`plan_entries` does everything that can fail without loading a model: it resolves every kind in
the registry (unknown kinds fail with the list of valid ones), validates every parameter against
its factory's signature (typos fail with a suggestion), checks the white-box order that `compose`
will enforce, and checks artifact paths. A missing artifact fails with `ArtifactError`, or skips
the entry with a note when the entry is `optional` (the bundled default marks strategies whose
artifact is trained separately that way).

Artifact paths are the string values of spec keys named `path`, `*_path`, `*_dir`, `*_file`,
`checkpoint`, `adapter` or `weights`. A relative path is looked up in the working directory first,
then next to the installed `refine` package (so `refine/assets/...` works from a checkout and from
a wheel); a value shaped like a hub id (`org/name`) that is not a local path is left to the
factory.

The fingerprint of an entry (its cache key) hashes three things, so a cached output is reused only
when the same code ran the same components on the same artifacts:
* its specs as written (editor and refiners);
* the size and modification time of every artifact file, so retraining an adapter invalidates
  its cached outputs;
* `source_hash()`, a hash of the `refine` package's source: every `.py` file under `refine/`
  except `refine/testing/` (fakes for the test suite, never a component of a real entry), read
  once per process. Any edit that could change an output (an editor, a sampler, a refiner, the
  judge, a benchmark's data loader) then recomputes instead of reusing an edit made by old code.
  Edits that cannot change outputs (a docstring, the report code) recompute too: hashing every
  file is the rule that cannot miss one, and the default comparison takes about a minute.
  Code outside `refine` (a factory given as `pkg.module:name`, third-party libraries) is not
  hashed: the lock file `constraints/cpu.txt` pins the libraries; a factory of your own is yours
  to version (change its spec or clear the cache).

Each entry also says whether it is an `oracle` (see `reads_ground_truth`): a component that
reads the case's ground truth (its target, or the benchmark's own judge) makes the entry an
upper bound, which the reports show apart from deployable strategies.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refine.compare.benchmarks.base import stable_hash
from refine.compare.config import CompareConfig, Spec
from refine.editor import Editor, compose
from refine.errors import ArtifactError, ConfigError
from refine.oracle import reads_ground_truth
from refine.registry import registry, validate_params

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the `refine` package folder
_PACKAGE_PARENT = _PACKAGE_ROOT.parent
_UNHASHED = ("testing",)  # top-level subpackages of refine/ left out of source_hash()
_ARTIFACT_KEYS = {"path", "checkpoint", "adapter", "weights"}
_ARTIFACT_SUFFIXES = ("_path", "_dir", "_file")
_HUB_ID = re.compile(r"^[\w.\-]+/[\w.\-]+$")


@dataclass
class Entry:
    """A checked, fingerprinted entry; `build()` loads the models and composes them."""

    name: str
    editor: Spec  # artifact paths resolved to absolute paths
    refiners: list[Spec]
    key: str  # cache key: specs as written + artifact fingerprints + source_hash()
    artifacts: dict[str, str] = field(default_factory=dict)  # as written -> resolved
    oracle: bool = False  # a component reads ground truth: an upper bound, not a deployable strategy

    def build(self) -> Editor:
        editor = build_editor(self.editor)
        refiners = [registry.build("refiner", spec) for spec in self.refiners]
        return compose(editor, *refiners)


@dataclass
class Skipped:
    name: str
    reason: str


def plan_entries(config: CompareConfig) -> tuple[list[Entry], list[Skipped]]:
    """Check every entry of `config` without building anything (see the module docstring)."""
    entries: list[Entry] = []
    skipped: list[Skipped] = []
    for name, entry_cfg in config.entries.items():
        editor_spec = config.entry_editor(name)
        try:
            _check_editor(name, editor_spec)
            for spec in entry_cfg.refiners:
                _check_spec(name, "refiner", spec)
            _check_order(name, editor_spec, entry_cfg.refiners)
            resolved_editor, artifacts = _resolve_artifacts(name, "editor", editor_spec)
            resolved_refiners = []
            for spec in entry_cfg.refiners:
                resolved, found = _resolve_artifacts(name, f"refiner {spec['kind']!r}", spec)
                resolved_refiners.append(resolved)
                artifacts.update(found)
        except ArtifactError as err:
            if entry_cfg.optional:
                skipped.append(Skipped(name, str(err).removeprefix(f"entry {name!r}: ")))
                continue
            raise
        key = stable_hash(
            {
                "editor": editor_spec,
                "refiners": entry_cfg.refiners,
                "artifacts": {written: fingerprint(Path(path)) for written, path in sorted(artifacts.items())},
                "code": source_hash(),
            },
            length=16,
        )
        oracle = entry_cfg.oracle or reads_ground_truth("backbone", editor_spec, ignore=("flow",)) or any(
            reads_ground_truth("refiner", spec) for spec in entry_cfg.refiners
        )
        entries.append(Entry(name, resolved_editor, resolved_refiners, key, artifacts, oracle))
    return entries, skipped


def build_editor(spec: Spec) -> Editor:
    """Build an editor spec: the factory's result if it is an `Editor`, else a `FlowEditor` around it."""
    flow = dict(spec.get("flow") or {})
    params = {k: v for k, v in spec.items() if k != "flow"}
    built = registry.build("backbone", params)
    if isinstance(built, Editor):
        if flow:
            raise ConfigError(f"editor {spec['kind']!r} is already an Editor; remove its 'flow' settings {flow!r}")
        return built
    from refine.rollout.flow_editor import FlowEditor

    return FlowEditor(built, **flow)


@functools.cache
def source_hash() -> str:
    """16 hex digits of SHA-256 over every `.py` file of the `refine` package but `refine/testing/`.

    Paths (relative, POSIX) and contents are hashed in sorted order, so the value depends on the
    code only, not on where it is installed; computed once per process (about 200 small files).

    >>> len(source_hash()), source_hash() == source_hash()
    (16, True)
    """
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE_ROOT.rglob("*.py")):
        relative = path.relative_to(_PACKAGE_ROOT)
        if relative.parts[0] in _UNHASHED or "__pycache__" in relative.parts:
            continue
        digest.update(relative.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def fingerprint(path: Path) -> list:
    """Size and mtime of `path` (or of every file under it): cheap, and changes when it is rewritten."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    root = path if path.is_dir() else path.parent
    return [[str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def resolve_path(value: str) -> Path | None:
    """The existing local path `value` names (cwd first, then next to the package), or None."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path if path.exists() else None
    for base in (Path.cwd(), _PACKAGE_PARENT):
        if (base / path).exists():
            return (base / path).resolve()
    return None


def is_artifact_key(key: str) -> bool:
    return key in _ARTIFACT_KEYS or key.endswith(_ARTIFACT_SUFFIXES)


def _check_spec(entry: str, category: str, spec: Spec, exclude: set[str] = frozenset()) -> Any:
    try:
        target = registry.resolve(category, spec["kind"])
        params = {k: v for k, v in spec.items() if k not in ("kind", *exclude)}
        validate_params(target, params, label=f"{category} {spec['kind']!r}")
    except ConfigError as err:
        raise ConfigError(f"entry {entry!r}: {err}") from None
    return target


def _check_editor(entry: str, spec: Spec) -> None:
    _check_spec(entry, "backbone", spec, exclude={"flow"})
    flow = spec.get("flow")
    if flow is not None and not isinstance(flow, dict):
        raise ConfigError(f"entry {entry!r}: editor 'flow' must be a mapping of FlowEditor settings, got {flow!r}")


def _check_order(entry: str, editor_spec: Spec, refiners: list[Spec]) -> None:
    """The white-box rule of `compose`, checked on the registered classes before anything is built.

    Only refiners whose kind resolves to an object carrying `needs_white_box` /
    `returns_white_box` attributes (classes usually do) can be checked here; `compose` checks the
    built objects again.
    """
    white_box, hidden_by = True, None  # editors built from backbones are FlowEditors (white-box)
    for spec in refiners:
        target = registry.resolve("refiner", spec["kind"])
        if getattr(target, "needs_white_box", False) is True and not white_box:
            raise ConfigError(
                f"entry {entry!r}: refiner {spec['kind']!r} needs a white-box flow editor but {hidden_by!r} "
                f"before it returns a black-box editor; list {spec['kind']!r} first"
            )
        if white_box and getattr(target, "returns_white_box", False) is not True:
            white_box, hidden_by = False, spec["kind"]


def _resolve_artifacts(entry: str, label: str, spec: Spec) -> tuple[Spec, dict[str, str]]:
    resolved = dict(spec)
    found: dict[str, str] = {}
    for key, value in spec.items():
        if not is_artifact_key(key) or not isinstance(value, str) or not value or "://" in value:
            continue
        path = resolve_path(value)
        if path is None:
            if _HUB_ID.match(value):
                continue  # a hub id for from_pretrained, not a local artifact
            raise ArtifactError(f"entry {entry!r}: {label}: artifact path {value!r} does not exist")
        resolved[key] = str(path)
        found[value] = str(path)
    return resolved, found
