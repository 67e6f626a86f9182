import itertools
import random

import numpy as np
import pytest

from refine.errors import InputError
from refine.shapes.world import (
    COLORS,
    POSITIONS,
    SHAPES,
    SIZES,
    Obj,
    Scene,
    cell_bounds,
    object_mask,
    random_scene,
    render,
)


def test_palette_colours_are_far_apart():
    distances = [np.linalg.norm(np.subtract(a, b)) for a, b in itertools.combinations(COLORS.values(), 2)]
    assert len(COLORS) >= 6 and min(distances) >= 95


def test_render_is_exact_flat_colour_without_anti_aliasing():
    scene = Scene("white", (Obj("circle", "red", "large", (1, 1)), Obj("triangle", "blue", "small", (0, 2))))
    array = np.asarray(render(scene))
    assert array.shape == (32, 32, 3)
    colours = {tuple(int(v) for v in px) for px in array.reshape(-1, 3)}
    assert colours == {COLORS["white"], COLORS["red"], COLORS["blue"]}  # no blended edge pixels
    assert tuple(array[16, 16]) == COLORS["red"] and tuple(array[0, 0]) == COLORS["white"]
    assert (array == COLORS["red"]).all(-1).sum() == object_mask(scene.at((1, 1)), 32).sum()


def test_render_is_deterministic_and_supports_64():
    scene = random_scene(random.Random(5), n_objects=4)
    assert render(scene).tobytes() == render(scene).tobytes()
    big = np.asarray(render(scene, 64))
    assert big.shape == (64, 64, 3)
    # the same picture at twice the resolution: colour of every cell centre agrees
    small = np.asarray(render(scene, 32))
    assert (small[6::10, 6::10][:3, :3] == big[13::20, 13::20][:3, :3]).all()


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_fit_their_cell_with_a_gap_to_neighbours(size):
    for shape, size_name, position in itertools.product(SHAPES, SIZES, POSITIONS):
        mask = object_mask(Obj(shape, "red", size_name, position), size)
        y0, y1, x0, x1 = cell_bounds(position, size)
        inside = mask[y0:y1, x0:x1].sum()
        assert inside == mask.sum() > 0
        if size_name == "large":
            assert mask.sum() > 2.5 * object_mask(Obj(shape, "red", "small", position), size).sum()


def test_sizes_are_big_enough_to_draw_at_32():
    heights = {z: object_mask(Obj("square", "red", z, (1, 1))).any(1).sum() for z in SIZES}
    assert heights == {"small": 5, "large": 9}


def test_scene_validation_messages():
    with pytest.raises(InputError, match="two objects in cell"):
        Scene("white", (Obj("circle", "red", "large", (0, 0)), Obj("square", "blue", "small", (0, 0))))
    with pytest.raises(InputError, match="invisible"):
        Scene("red", (Obj("circle", "red", "large", (0, 0)),))
    with pytest.raises(InputError, match="unknown shape 'hexagon'"):
        Obj("hexagon", "red", "large", (0, 0))
    with pytest.raises(InputError, match="off the 3x3 grid"):
        Obj("circle", "red", "large", (3, 0))
    with pytest.raises(InputError, match="multiple of 32"):
        render(Scene("white"), 48)


def test_scene_is_canonical_hashable_and_round_trips():
    a = Obj("circle", "red", "large", (2, 2))
    b = Obj("square", "blue", "small", (0, 1))
    s1, s2 = Scene("white", (a, b)), Scene("white", (b, a))
    assert s1 == s2 and hash(s1) == hash(s2)
    assert Scene.from_dict(s1.to_dict()) == s1
    assert s1.to_dict()["objects"][0]["position"] == [0, 1]


def test_random_scene_invariants_and_seeding():
    rng = random.Random(0)
    scenes = [random_scene(rng) for _ in range(300)]
    assert {len(s.objects) for s in scenes} == {1, 2, 3, 4}
    assert all(o.color != s.background for s in scenes for o in s.objects)
    assert [random_scene(random.Random(i)) for i in range(20)] == [random_scene(random.Random(i)) for i in range(20)]
