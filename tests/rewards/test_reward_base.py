"""RewardOutput, CompositeReward, the score cache and the registry entries of the reward layer."""

from __future__ import annotations

import pytest
from PIL import Image

from refine.errors import ConfigError, InputError
from refine.registry import registry
from refine.rewards.base import CompositeReward, RewardOutput, ScoreCache, image_digest


def constant(value, name):
    def reward(sources, outputs, instructions, metas):
        return RewardOutput([value(m) for m in metas], [{"seen": m.get("id")} for m in metas])

    reward.name = name
    return reward


BATCH = ([Image.new("RGB", (4, 4))] * 3, [Image.new("RGB", (4, 4))] * 3, ["a", "b", "c"], [{"id": 0}, {"id": 1}, {"id": 2}])


def test_composite_weights_and_renormalizes_missing_parts():
    a = constant(lambda m: 1.0, "a")
    b = constant(lambda m: None if m["id"] == 1 else 0.0, "b")
    out = CompositeReward({"a": a, "b": b}, weights={"a": 1.0, "b": 3.0})(*BATCH)
    assert out.scores == [0.25, 1.0, 0.25]  # (1*1 + 3*0) / 4; item 1: only "a" applies
    assert out.details[1] == {"a": 1.0, "b": None, "a/details": {"seen": 1}, "b/details": {"seen": 1}}
    strict = CompositeReward([a, b], weights={"b": 3.0}, missing="none")(*BATCH)
    assert strict.scores == [0.25, None, 0.25]


def test_composite_all_missing_or_zero_weight_is_none():
    none = constant(lambda m: None, "none")
    assert CompositeReward([none])(*BATCH).scores == [None, None, None]
    zero = CompositeReward({"a": constant(lambda m: 1.0, "a")}, weights={"a": 0.0})
    assert zero(*BATCH).scores == [None, None, None]


def test_composite_rejects_bad_configs():
    with pytest.raises(ConfigError, match="unknown parts"):
        CompositeReward({"a": constant(lambda m: 1.0, "a")}, weights={"b": 1.0})
    with pytest.raises(ConfigError, match="share a name"):
        CompositeReward([constant(lambda m: 1.0, "a"), constant(lambda m: 0.0, "a")])
    with pytest.raises(ConfigError, match="missing"):
        CompositeReward([constant(lambda m: 1.0, "a")], missing="drop")
    with pytest.raises(InputError, match="one entry per item"):
        CompositeReward([constant(lambda m: 1.0, "a")])(BATCH[0], BATCH[1][:2], BATCH[2], BATCH[3])


def test_composite_builds_parts_from_registry_specs():
    registry.register("reward", "test_const", lambda value=0.5, name="c": constant(lambda m: value, name))
    reward = registry.build("reward", {"kind": "composite", "rewards": {"x": {"kind": "test_const", "value": 0.2},
                                                                       "y": {"kind": "test_const", "value": 0.8}},
                                       "weights": {"x": 3.0, "y": 1.0}})
    assert reward(*BATCH).scores == pytest.approx([0.35] * 3)


def test_builtin_reward_kinds_are_listed():
    assert {"mllm", "mllm_multiturn", "consistency", "composite", "shapes_if", "shapes_cc", "shapes_pq",
            "shapes_overall"} <= set(registry.kinds("reward"))
    assert {"transformers", "openai"} <= set(registry.kinds("vlm_backend"))


def test_reward_output_checks_lengths_and_means():
    out = RewardOutput([1.0, None, 0.0])
    assert out.details == [{}, {}, {}] and out.num_scored == 2 and out.mean() == 0.5
    assert RewardOutput([None]).mean() is None
    with pytest.raises(InputError):
        RewardOutput([1.0], [{}, {}])


def test_score_cache_is_bounded_lru():
    cache = ScoreCache(max_items=2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" becomes most recent
    cache.put("c", 3)  # evicts "b"
    assert "b" not in cache and cache.get("c") == 3 and len(cache) == 2
    assert (cache.hits, cache.misses) == (2, 0)


def test_image_digest_depends_on_pixels_only():
    red = Image.new("RGB", (4, 4), "red")
    assert image_digest(red) == image_digest(red.copy())
    assert image_digest(red) != image_digest(Image.new("RGB", (4, 4), "blue"))
    assert image_digest(red) != image_digest(Image.new("RGB", (4, 2), "red"))
