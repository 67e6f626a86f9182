"""Registry: configs pick components by `kind:`; users add their own by dotted import path.

Example:
    >>> from refine.registry import registry
    >>> registry.resolve("demo", "collections:OrderedDict").__name__      # any dotted path works
    'OrderedDict'
    >>> @registry.register("demo", "scale")
    ... def scale(value: float = 1.0, factor: int = 2):
    ...     return value * factor
    >>> registry.build("demo", {"kind": "scale", "factor": "3"})   # coerced to int
    3.0
    >>> registry.build("demo", {"kind": "scale", "factr": 4})
    Traceback (most recent call last):
    ...
    refine.errors.ConfigError: demo 'scale': unknown key 'factr' (did you mean 'factor'?)

Categories used by refine: `backbone`, `reward`, `refiner`, `benchmark`, `config` (the config
class of each CLI entry point, used by `refine config show|validate`). Built-in kinds are listed
below as import paths, so listing them never imports torch; a target is imported on first use.
A kind is either a registered name or a dotted path `package.module:attr` (or `package.module.attr`).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import typing
from typing import Any, Callable

from pydantic import ConfigDict, ValidationError, create_model

from refine.config import format_validation_error
from refine.errors import ConfigError

# Built-in kinds, by import path. Later layers add their lines here, so `refine config kinds`
# can list everything without importing the heavy modules.
BUILTINS: dict[str, dict[str, str]] = {
    "backbone": {
        "shapes": "refine.backbones.shapes:load_shapes_backbone",
        "qwen_image_edit": "refine.backbones.qwen_image_edit:load_qwen_image_edit",
        "flux_kontext": "refine.backbones.flux_kontext:load_flux_kontext",
    },
    "reward": {
        "mllm": "refine.rewards.mllm:MLLMJudge",
        "mllm_multiturn": "refine.rewards.mllm:MultiTurnJudge",
        "consistency": "refine.rewards.consistency:ConsistencyReward",
        "composite": "refine.rewards.base:CompositeReward",
        "shapes_if": "refine.rewards.shapes_judge:ShapesIF",
        "shapes_cc": "refine.rewards.shapes_judge:ShapesCC",
        "shapes_pq": "refine.rewards.shapes_judge:ShapesPQ",
        "shapes_overall": "refine.rewards.shapes_judge:ShapesOverall",
        "shapes_gated_if": "refine.rewards.shapes_judge:ShapesGatedIF",
        "thinker_score": "refine.thinker.score_reward:ThinkerScore",
    },
    # Backends of the MLLM judges (refine.rewards.backends): where the VLM runs.
    "vlm_backend": {
        "transformers": "refine.rewards.backends.transformers_vlm:TransformersVLM",
        "openai": "refine.rewards.backends.openai_compatible:OpenAICompatibleVLM",
    },
    "refiner": {
        "edit_r1": "refine.edit_r1.refiner:EditR1Refiner",
        "inline_critic": "refine.inline_critic.refiner:InlineCritic",
        "multiturn": "refine.multiturn.refiner:MultiTurnRefiner",
        "thinker": "refine.thinker.config:build_thinker_refiner",
        "best_of_k": "refine.selection:BestOfK",
    },
    "benchmark": {
        "shapes-bench": "refine.compare.benchmarks.shapes:shapes_bench",
        "shapes-mt": "refine.compare.benchmarks.shapes:shapes_mt",
        "shapes-val": "refine.compare.benchmarks.shapes:shapes_val",
        "shapes-mt-val": "refine.compare.benchmarks.shapes:shapes_mt_val",
        "gedit": "refine.compare.benchmarks.gedit:GEditBench",
        "imgedit": "refine.compare.benchmarks.imgedit:ImgEditBench",
        "kris": "refine.compare.benchmarks.kris:KrisBench",
        "rise": "refine.compare.benchmarks.rise:RiseBench",
        "mse-bench": "refine.compare.benchmarks.mse:MSEBench",
        "edival": "refine.compare.benchmarks.edival:EdiValBench",
    },
    "config": {
        "base": "refine.shapes.editor_training.config:BaseTrainConfig",
        "compare": "refine.compare.config:CompareConfig",
        "edit_r1": "refine.edit_r1.config:EditR1Config",
        "inline_critic": "refine.inline_critic.config:InlineCriticConfig",
        "multiturn": "refine.multiturn.config:MultiTurnConfig",
        "thinker": "refine.thinker.config:ThinkerConfig",
        "thinker_data": "refine.thinker.data:ThinkerDataConfig",
        "thinker_train": "refine.thinker.train:ThinkerTrainConfig",
        "vlm": "refine.shapes.vlm.config:VLMTrainConfig",
    },
}

# Specs nested inside a component's spec, checked with it: category -> {key: category of the value}.
NESTED_SPECS: dict[str, dict[str, str]] = {
    "reward": {"rewards": "reward", "backend": "vlm_backend"},
}


class Registry:
    def __init__(self, builtins: dict[str, dict[str, str]] | None = None) -> None:
        self._entries: dict[str, dict[str, Any]] = {cat: dict(kinds) for cat, kinds in (builtins or {}).items()}

    def register(self, category: str, name: str, target: Any | None = None) -> Callable:
        """Register `target` (object or import path) as `name` in `category`; usable as a decorator."""

        def add(obj: Any) -> Any:
            self._entries.setdefault(category, {})[name] = obj
            return obj

        return add(target) if target is not None else add

    def kinds(self, category: str) -> list[str]:
        return sorted(self._entries.get(category, {}))

    def categories(self) -> list[str]:
        return sorted(self._entries)

    def check(self, category: str, kind: Any, where: str | None = None) -> None:
        """Raise `ConfigError` unless `kind` is registered in `category` or is a dotted import path.

        Imports nothing, so configs call it at load time (`refine config validate` catches a typo
        before any compute); a dotted path is only checked when it is built. `where` names the key
        in the message (`reward.kind`).

        >>> registry.check("vlm_backend", "openai")
        >>> registry.check("vlm_backend", "opnai", where="reward.backend.kind")
        Traceback (most recent call last):
        ...
        refine.errors.ConfigError: reward.backend.kind: unknown vlm_backend kind 'opnai'; did you mean 'openai'? ...
        """
        if not isinstance(kind, str) or not kind.strip():
            raise ConfigError(f"{where or category + ' kind'}: a kind must be a non-empty name, got {kind!r}")
        if kind in self._entries.get(category, {}) or "." in kind or ":" in kind:
            return
        valid = self.kinds(category)
        close = difflib.get_close_matches(kind, valid, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"{where + ': ' if where else ''}unknown {category} kind {kind!r}; {hint}valid kinds: "
            f"{', '.join(valid) or '(none registered)'}, or a dotted import path like 'my_pkg.module:MyClass'"
        )

    def check_spec(self, category: str, spec: Any, where: str) -> None:
        """`check` the `kind` of a spec and of the specs nested in it (`NESTED_SPECS`): a composite's
        parts, a judge's backend. Strings are specs of their own kind."""
        if isinstance(spec, str):
            self.check(category, spec, where)
            return
        if not isinstance(spec, dict) or "kind" not in spec:
            return  # the config's own validator says what is missing
        self.check(category, spec["kind"], f"{where}.kind")
        for key, inner in NESTED_SPECS.get(category, {}).items():
            value = spec.get(key)
            if key == "rewards" and isinstance(value, dict):  # a composite's {name: spec}
                for name, part in value.items():
                    self.check_spec(inner, part, f"{where}.{key}.{name}")
            elif isinstance(value, list):
                for i, part in enumerate(value):
                    self.check_spec(inner, part, f"{where}.{key}[{i}]")
            elif value is not None:
                self.check_spec(inner, value, f"{where}.{key}")

    def resolve(self, category: str, kind: str) -> Any:
        """The object registered as `kind`, or imported from `kind` when it is a dotted path."""
        self.check(category, kind)
        entry = self._entries.get(category, {}).get(kind, kind)
        if isinstance(entry, str):
            entry = import_object(entry)
            if kind in self._entries.get(category, {}):
                self._entries[category][kind] = entry
        return entry

    def build(self, category: str, spec: dict[str, Any] | str, **runtime: Any) -> Any:
        """Call the target of `spec["kind"]` with the other keys (checked against its signature)
        plus `runtime` keyword arguments supplied by the caller (devices, loaded models...)."""
        if isinstance(spec, str):
            spec = {"kind": spec}
        if "kind" not in spec:
            raise ConfigError(f"{category} spec {spec!r} has no 'kind'; valid kinds: {', '.join(self.kinds(category))}")
        params = {k: v for k, v in spec.items() if k != "kind"}
        target = self.resolve(category, spec["kind"])
        params = validate_params(target, params, label=f"{category} {spec['kind']!r}", exclude=set(runtime))
        return target(**params, **runtime)


def import_object(path: str) -> Any:
    """Import `package.module:attr` or `package.module.attr`; errors are `ConfigError`s."""
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"{path!r} is not an import path like 'package.module:attr'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"cannot import {module_name!r} for {path!r}: {err}") from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"module {module_name!r} has no attribute {attr!r} (from {path!r})") from None
    return obj


def validate_params(target: Callable, params: dict[str, Any], label: str, exclude: set[str] = frozenset()) -> dict[str, Any]:
    """Validate keyword `params` against `target`'s signature with pydantic (typos rejected)."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return params
    try:  # resolve string annotations (modules using `from __future__ import annotations`)
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:
        hints = {}
    fields: dict[str, Any] = {}
    accepts_any = False
    for name, param in signature.parameters.items():
        if param.kind is param.VAR_KEYWORD:
            accepts_any = True
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or name in exclude or name == "self":
            continue
        annotation = hints.get(name, param.annotation)
        if annotation is inspect.Parameter.empty or isinstance(annotation, str):
            annotation = Any
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[name] = (annotation, default)
    model = create_model(
        f"{getattr(target, '__name__', 'Target')}Params",
        __config__=ConfigDict(extra="allow" if accepts_any else "forbid", arbitrary_types_allowed=True),
        **fields,
    )
    try:
        validated = model.model_validate(params)
    except ValidationError as err:
        raise ConfigError(f"{label}: {format_validation_error(model, err)}") from None
    return {k: getattr(validated, k) for k in params}


registry = Registry(BUILTINS)
