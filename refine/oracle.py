"""Oracles: components that read ground truth, and how a caller finds out without building them.

Example:
    >>> from refine.oracle import reads_ground_truth
    >>> reads_ground_truth("refiner", {"kind": "thinker", "thinker": "expert"})    # ShapeEdit's expert
    True
    >>> reads_ground_truth("refiner", {"kind": "thinker", "thinker": "vlm:/models/EditThinker-8B"})
    False
    >>> reads_ground_truth("reward", "shapes_overall"), reads_ground_truth("reward", "consistency")
    (True, False)

A component reads ground truth when what it returns depends on the case's answer: the target
image or scene, or the benchmark's own judge (ShapeEdit's judge compares every output with the
exact target). Such a component gives an upper bound, not a strategy a user can deploy, and
`refine compare` reports every entry holding one apart, as an oracle. A component says so itself,
with a class (or factory) attribute, so a new component needs no list kept elsewhere:

* `reads_ground_truth = True`: `ShapeExpertThinker`, the ShapeEdit judge rewards;
* `reads_ground_truth = <function of the spec's parameters>`, for components whose answer depends
  on what they wrap: the `thinker` refiner asks its thinker's class, `BestOfK` asks its reward,
  `CompositeReward` its parts. Their built objects carry the answer as a plain bool.
No attribute means False.

What the attribute cannot see is a judge equal to the benchmark's own on a benchmark without a
target (an MLLM judge picking among edits, scored by the same MLLM judge): mark such an entry
`oracle: true` in the compare config.

`reads_ground_truth(category, spec)` resolves the kind through `refine.registry` (an import, no
model is built), so `refine compare` labels entries before any compute.
"""

from __future__ import annotations

from typing import Any

from refine.registry import registry


def reads_ground_truth(category: str, spec: str | dict[str, Any], ignore: tuple[str, ...] = ()) -> bool:
    """Whether the component `spec` names (a kind, or `{kind: ..., **params}`) reads ground truth.

    `ignore` lists spec keys that are not the factory's parameters (an editor spec's `flow`).
    """
    if isinstance(spec, str):
        spec = {"kind": spec}
    target = registry.resolve(category, spec["kind"])
    params = {key: value for key, value in spec.items() if key != "kind" and key not in ignore}
    return target_reads_ground_truth(target, params)


def component_reads_ground_truth(category: str, component: Any) -> bool:
    """Like `reads_ground_truth` for a spec (kind name or mapping), or the attribute of a built object."""
    if isinstance(component, (str, dict)):
        return reads_ground_truth(category, component)
    return target_reads_ground_truth(component)


def target_reads_ground_truth(target: Any, params: dict[str, Any] | None = None) -> bool:
    """The `reads_ground_truth` attribute of a class, factory or object: a bool, or a function of `params`."""
    flag = getattr(target, "reads_ground_truth", False)
    if callable(flag):
        return bool(flag(**(params or {})))
    return flag is True
