"""Content consistency with the tiny DINOv2: identical = 1, changes lower it, masks exclude them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from refine.errors import ConfigError
from refine.registry import registry
from refine.rewards.consistency import ConsistencyReward


@pytest.fixture(scope="module")
def reward(dinov2_path):
    return ConsistencyReward(dinov2_path)


def edited_copy(image: Image.Image, box=(2, 2, 13, 13), fill="black") -> Image.Image:
    out = image.copy()
    ImageDraw.Draw(out).rectangle(box, fill=fill)
    return out


def box_mask(box=(2, 2, 13, 13), size=(32, 32)) -> Image.Image:
    mask = Image.new("L", size)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask


def test_identical_images_score_one(reward, make_scene):
    images = [make_scene(i) for i in range(3)]
    out = reward(images, [im.copy() for im in images], [""] * 3, [{}] * 3)
    assert out.scores == pytest.approx([1.0] * 3, abs=1e-5)
    assert all(d == pytest.approx({"cls": 1.0, "patch": 1.0, "pixel": 1.0}, abs=1e-5) for d in out.details)


def test_a_changed_region_lowers_every_component(reward, make_scene):
    source = make_scene(2)
    small, large = edited_copy(source, (2, 2, 7, 7)), edited_copy(source, (2, 2, 25, 25))
    out = reward([source, source], [small, large], ["", ""], [{}, {}])
    for detail in out.details:
        assert detail["cls"] < 1.0 - 1e-6 and detail["patch"] < 0.999 and detail["pixel"] < 0.999
    assert out.scores[1] < out.scores[0] < 1.0  # a bigger change costs more


def test_a_mask_over_the_changed_region_restores_the_score(reward, make_scene):
    source = make_scene(3)
    edited = edited_copy(source)
    as_array = np.asarray(box_mask()) > 0
    metas = [{}, {"mask": box_mask()}, {"mask": torch.from_numpy(as_array)}, {"mask": box_mask((0, 0, 6, 6))}]
    out = reward([source] * 4, [edited] * 4, [""] * 4, metas)
    assert out.scores[0] < 0.99
    assert out.scores[1] == pytest.approx(1.0, abs=1e-5) and out.scores[2] == pytest.approx(1.0, abs=1e-5)
    assert out.scores[0] < out.scores[3] < 1.0  # a mask covering part of the change helps partly


def test_mask_over_everything_is_not_applicable_and_sizes_are_aligned(reward, make_scene):
    source = make_scene(4)
    everything = Image.new("L", (32, 32), 255)
    bigger = source.resize((64, 64), Image.NEAREST)  # same content at another size
    out = reward([source, source], [source, bigger], ["", ""], [{"mask": everything}, {}])
    assert out.scores[0] is None and "whole image" in out.details[0]["error"]
    assert out.scores[1] == pytest.approx(1.0, abs=2e-2)


def test_weights_select_components_and_registry_builds_it(dinov2_path, make_scene):
    source = make_scene(5)
    edited = edited_copy(source)
    pixel_only = registry.build("reward", {"kind": "consistency", "model": str(dinov2_path), "weights": {"pixel": 1.0}})
    out = pixel_only([source], [edited], [""], [{}])
    assert out.scores[0] == pytest.approx(out.details[0]["pixel"])
    expected = 1 - np.abs(np.asarray(source, np.float32) - np.asarray(edited, np.float32)).mean() / 255
    assert out.scores[0] == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ConfigError, match="weights"):
        ConsistencyReward(dinov2_path, weights={"lpips": 1.0})
    with pytest.raises(ConfigError, match="cannot load"):
        ConsistencyReward("/nonexistent/dino")
