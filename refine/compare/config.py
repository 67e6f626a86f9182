"""The config of `refine compare`: a benchmark, named entries (editor + refiners), seeds, a results folder.

Example:
    >>> from refine.compare.config import CompareConfig
    >>> cfg = CompareConfig(
    ...     benchmark="shapes-bench",
    ...     entries={"base": {}, "+thinker": {"refiners": ["thinker"]}},
    ...     limit=8,
    ... )
    >>> list(cfg.entries), cfg.entries["+thinker"].refiners, cfg.editor
    (['base', '+thinker'], [{'kind': 'thinker'}], {'kind': 'shapes'})

Entries are compositions: `editor` (a backbone kind wrapped in a `FlowEditor`, or any factory
returning an `Editor`) plus `refiners`, each built by `refine.registry.registry.build("refiner",
spec)` and stacked with `refine.compose`. A new strategy adds a registry entry and a config line,
never compare code. The bundled default is `examples/configs/compare/shapes.yaml`.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from refine.config import RefineConfig
from refine.registry import registry

Spec = dict[str, Any]

_ENTRY_NAME = re.compile(r"^[A-Za-z0-9_+.\-]+$")


def as_spec(value: str | Spec, what: str) -> Spec:
    """`"thinker"` -> `{"kind": "thinker"}`; a mapping must carry a `kind`."""
    if isinstance(value, str):
        return {"kind": value}
    if isinstance(value, dict):
        if "kind" not in value:
            raise ValueError(f"{what} {value!r} has no 'kind' (write {{kind: NAME, ...}} or just NAME)")
        return dict(value)
    raise ValueError(f"{what} must be a kind name or a mapping with 'kind', got {type(value).__name__}")


class EntryConfig(RefineConfig):
    """One compared strategy: an editor and the refiners composed around it (first = innermost)."""

    editor: Spec | None = Field(
        None,
        description="Editor spec {kind: <backbone kind or dotted factory>, flow: {FlowEditor kwargs}, ...}; "
        "null uses the config's top-level `editor`.",
    )
    refiners: list[Spec] = Field(
        default_factory=list,
        description="Refiner specs in composition order, each {kind: <refiner kind or dotted path>, ...params}.",
    )
    optional: bool = Field(
        False,
        description="Skip this entry with a printed note when one of its artifact paths does not exist "
        "(the bundled default uses it for strategies whose artifact may not be trained yet); "
        "false fails before any compute instead.",
    )
    oracle: bool = Field(
        False,
        description="Report this entry as an upper bound (oracle) even though none of its components says it reads "
        "ground truth, e.g. selection by the benchmark's own MLLM judge. Components that read ground truth "
        "(ShapeEdit's expert thinker, its judge as a reward) make an entry an oracle whatever this says.",
    )

    @field_validator("editor", mode="before")
    @classmethod
    def _editor_spec(cls, value: Any) -> Any:
        return None if value is None else as_spec(value, "editor")

    @field_validator("refiners", mode="before")
    @classmethod
    def _refiner_specs(cls, value: Any) -> Any:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValueError("refiners must be a list of refiner specs")
        return [as_spec(item, "refiner") for item in value]


class CompareConfig(RefineConfig):
    """Everything `refine compare` needs; see `examples/configs/compare/shapes.yaml`."""

    benchmark: Spec = Field(
        description="Benchmark spec {kind: shapes-bench|shapes-mt|gedit|imgedit|edival|kris|rise|mse-bench|<dotted path>, ...params}; "
        "folder benchmarks take `root` and a `judge` spec; ShapeEdit splits take an optional `judge` "
        "(vlm: the bundled ShapeEdit VLM, or an MLLM judge spec {kind: mllm, mode, backend}; mode may list several modes, "
        "whose scores are averaged) scored beside the exact judge.",
    )
    editor: Spec = Field(
        default_factory=lambda: {"kind": "shapes"},
        description="Default editor spec for entries that do not set their own.",
    )
    entries: dict[str, EntryConfig] = Field(
        description="Named entries in report order, e.g. {base: {}, +thinker: {refiners: [thinker]}}.",
    )
    limit: int | None = Field(
        None,
        ge=1,
        description="Run only this many cases, taken category by category (null: the whole benchmark).",
    )
    seeds: list[int] = Field(default_factory=lambda: [0], description="Seeds; every entry runs every case once per seed.")
    batch_size: int = Field(8, ge=1, description="Requests per editor call.")
    out_dir: str = Field("runs/compare/shapes", description="Results folder (report files, images, and the cache).")
    cache_dir: str | None = Field(
        None,
        description="Where finished edits and scores are cached (null: <out_dir>/cache). Share it between "
        "configs to reuse outputs.",
    )
    grid_cases: int = Field(8, ge=0, description="Cases shown in the HTML image grid (half of them the worst).")
    bootstrap: int = Field(1000, ge=100, description="Bootstrap resamples for the 95% intervals.")
    progress: bool = Field(True, description="Show a progress bar per entry.")
    threads: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads while the comparison runs (null: torch's default). Small editors such as "
        "ShapeEdit's run fastest on 1: their ops are too small to split, and extra threads spin when cores are shared.",
    )

    @field_validator("benchmark", "editor", mode="before")
    @classmethod
    def _spec(cls, value: Any, info) -> Any:
        return as_spec(value, info.field_name)

    @field_validator("entries", mode="before")
    @classmethod
    def _entries(cls, value: Any) -> Any:
        if not isinstance(value, dict) or not value:
            raise ValueError("entries must be a non-empty mapping of name -> {editor, refiners}")
        return {name: ({} if spec is None else spec) for name, spec in value.items()}

    @model_validator(mode="after")
    def _check(self) -> "CompareConfig":
        for name in self.entries:
            if not _ENTRY_NAME.match(str(name)):
                raise ValueError(
                    f"entry name {name!r} may only use letters, digits and _ + . - (it names folders); rename it"
                )
        if not self.seeds:
            raise ValueError("seeds is empty; give at least one seed, e.g. seeds: [0]")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds {self.seeds} repeat a value; list each seed once")
        # Kinds are names: a typo fails at load (`refine config validate`), before anything is built.
        registry.check_spec("benchmark", self.benchmark, where="benchmark")
        registry.check_spec("backbone", self.editor, where="editor")
        for name, entry in self.entries.items():
            if entry.editor is not None:
                registry.check_spec("backbone", entry.editor, where=f"entry {name!r}: editor")
            for i, refiner in enumerate(entry.refiners):
                registry.check_spec("refiner", refiner, where=f"entry {name!r}: refiners[{i}]")
        return self

    def entry_editor(self, name: str) -> Spec:
        """The editor spec entry `name` uses (its own or the top-level default)."""
        return self.entries[name].editor or self.editor
