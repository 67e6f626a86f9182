"""The Reward protocol, its output record, weighted composition and the per-run score cache.

Example:
    >>> from PIL import Image
    >>> from refine.rewards.base import CompositeReward, RewardOutput
    >>> def brightness(sources, outputs, instructions, metas):          # any callable is a Reward
    ...     return RewardOutput([sum(o.convert("L").getdata()) / (255 * o.width * o.height) for o in outputs])
    >>> def only_recolor(sources, outputs, instructions, metas):
    ...     return RewardOutput([1.0 if m.get("task") == "recolor" else None for m in metas])
    >>> reward = CompositeReward({"bright": brightness, "recolor": only_recolor}, weights={"bright": 1, "recolor": 3})
    >>> white, black = Image.new("RGB", (8, 8), "white"), Image.new("RGB", (8, 8), "black")
    >>> out = reward([black, black], [white, black], ["recolor it", "add a cat"], [{"task": "recolor"}, {}])
    >>> out.scores                       # item 2: "recolor" is not applicable, weights renormalised
    [1.0, 0.0]
    >>> out.details[1]["recolor"] is None
    True

One signature for every reward (TRL-like, plain): `reward(sources, outputs, instructions, metas)`
with four equally long lists (source PIL image, edited PIL image, instruction, meta dict), returning
a `RewardOutput`: one float or None per item ("not applicable" or "could not be scored") and one
details dict per item for logging. Rewards never raise for one bad item (a parse failure is None
plus details); they raise `BackendError` only when the model behind them is unreachable.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Mapping, Protocol, Sequence, runtime_checkable

from PIL import Image

from refine.errors import ConfigError, InputError
from refine.oracle import component_reads_ground_truth, target_reads_ground_truth


@dataclass
class RewardOutput:
    """Per-item scores (float, or None when not applicable / not scorable) and details for logging."""

    scores: list[float | None]
    details: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.details:
            self.details = [{} for _ in self.scores]
        if len(self.details) != len(self.scores):
            raise InputError(f"RewardOutput has {len(self.scores)} scores but {len(self.details)} details")

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def num_scored(self) -> int:
        return sum(s is not None for s in self.scores)

    def mean(self) -> float | None:
        """Mean over the scored items, None when no item was scored."""
        values = [s for s in self.scores if s is not None]
        return sum(values) / len(values) if values else None


@runtime_checkable
class Reward(Protocol):
    """Anything called as `reward(sources, outputs, instructions, metas) -> RewardOutput`.

    Optional attribute `name` (used as the key in composite details and logs).
    """

    def __call__(
        self,
        sources: Sequence[Image.Image],
        outputs: Sequence[Image.Image],
        instructions: Sequence[str],
        metas: Sequence[dict],
    ) -> RewardOutput: ...


def reward_name(reward: object) -> str:
    return getattr(reward, "name", None) or getattr(reward, "__name__", None) or type(reward).__name__


def check_batch(sources: Sequence, outputs: Sequence, instructions: Sequence, metas: Sequence | None) -> list[dict]:
    """Validate the four reward inputs have one entry per item; returns `metas` ([{}...] when None)."""
    metas = [{} for _ in outputs] if metas is None else list(metas)
    lengths = {"sources": len(sources), "outputs": len(outputs), "instructions": len(instructions), "metas": len(metas)}
    if len(set(lengths.values())) != 1:
        raise InputError(f"reward inputs must have one entry per item, got lengths {lengths}")
    return [m if m is not None else {} for m in metas]


class CompositeReward:
    """Weighted sum of rewards; items where a part is None use the other parts' renormalised weights.

    Args:
        rewards: name -> Reward, or a name -> registry spec ({"kind": "consistency", ...}) mapping
            (specs are built through `refine.registry` category "reward"), or a list (names are
            taken from each reward's `name`).
        weights: name -> weight (default 1 for every part). Negative weights are allowed
            (penalties); a zero-sum of applicable weights gives None.
        missing: "renormalize" (default): a part that returns None is left out and the weights of
            the applicable parts are renormalised; "none": the composite is None if any part is None.

    details[i] holds each part's score under its name and the part's details under "<name>/details".
    """

    name = "composite"

    def __init__(
        self,
        rewards: Mapping[str, Any] | Sequence[Any],
        weights: Mapping[str, float] | None = None,
        missing: str = "renormalize",
        name: str = "composite",
    ) -> None:
        if missing not in ("renormalize", "none"):
            raise ConfigError(f"composite reward: missing={missing!r}; use 'renormalize' or 'none'")
        if isinstance(rewards, Mapping):
            parts = {str(k): _build_reward(v) for k, v in rewards.items()}
        else:
            built = [_build_reward(r) for r in rewards]
            parts = {reward_name(r): r for r in built}
            if len(parts) != len(built):
                raise ConfigError("composite reward: two parts share a name; pass a {name: reward} mapping instead")
        if not parts:
            raise ConfigError("composite reward needs at least one part in 'rewards'")
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(parts))
        if unknown:
            raise ConfigError(f"composite reward: weights for unknown parts {unknown}; parts are {sorted(parts)}")
        self.parts = parts
        self.weights = {k: float(weights.get(k, 1.0)) for k in parts}
        self.missing = missing
        self.name = name
        # an instance answers for its built parts; the class-level function below answers for a spec
        self.reads_ground_truth = any(target_reads_ground_truth(part) for part in parts.values())

    @staticmethod
    def reads_ground_truth(rewards: Mapping[str, Any] | Sequence[Any] = (), **_settings: Any) -> bool:
        """A composite reads ground truth when one of its parts does (`refine.oracle`)."""
        parts = rewards.values() if isinstance(rewards, Mapping) else rewards
        return any(component_reads_ground_truth("reward", part) for part in parts)

    def __call__(self, sources, outputs, instructions, metas=None) -> RewardOutput:
        metas = check_batch(sources, outputs, instructions, metas)
        results = {name: reward(sources, outputs, instructions, metas) for name, reward in self.parts.items()}
        for name, result in results.items():
            if len(result) != len(outputs):
                raise InputError(f"reward {name!r} returned {len(result)} scores for {len(outputs)} items")
        scores: list[float | None] = []
        details: list[dict[str, Any]] = []
        for i in range(len(outputs)):
            item = {name: results[name].scores[i] for name in self.parts}
            detail: dict[str, Any] = dict(item)
            for name in self.parts:
                if results[name].details[i]:
                    detail[f"{name}/details"] = results[name].details[i]
            scores.append(self._combine(item))
            details.append(detail)
        return RewardOutput(scores, details)

    def _combine(self, item: dict[str, float | None]) -> float | None:
        present = {k: v for k, v in item.items() if v is not None and not math.isnan(v)}
        if self.missing == "none" and len(present) != len(item):
            return None
        total_weight = sum(self.weights[k] for k in present)
        if not present or total_weight == 0:
            return None
        return sum(self.weights[k] * v for k, v in present.items()) / total_weight


def _build_reward(spec: Any) -> Callable:
    if callable(spec):
        return spec
    if isinstance(spec, (str, Mapping)):
        from refine.registry import registry

        return registry.build("reward", dict(spec) if isinstance(spec, Mapping) else spec)
    raise ConfigError(f"composite reward part {spec!r} is neither a reward nor a {{'kind': ...}} spec")


class ScoreCache:
    """A bounded LRU map from request keys to results, so identical requests are scored once per run.

    >>> cache = ScoreCache(max_items=2)
    >>> cache.put("a", 1.0); cache.put("b", 2.0); cache.put("c", 3.0)   # "a" is evicted
    >>> cache.get("a") is None, cache.get("c"), cache.hits, cache.misses
    (True, 3.0, 1, 1)
    """

    def __init__(self, max_items: int = 100_000) -> None:
        self.max_items = max_items
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def get(self, key: Hashable) -> Any | None:
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]
        self.misses += 1
        return None

    def put(self, key: Hashable, value: Any) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()


def image_digest(image: Image.Image) -> str:
    """A content hash of a PIL image (mode, size and pixels): equal pixels, equal digest.

    >>> image_digest(Image.new("RGB", (4, 4), "red")) == image_digest(Image.new("RGB", (4, 4), (255, 0, 0)))
    True
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{image.mode}:{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()
