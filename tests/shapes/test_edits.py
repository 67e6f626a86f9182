import random

import pytest

from refine.errors import InputError
from refine.shapes.edits import (
    CATEGORIES,
    Add,
    Background,
    Hybrid,
    Move,
    Recolor,
    Remove,
    Replace,
    Resize,
    Swap,
    apply_edit,
    edit_from_dict,
    feasible_categories,
    random_edit,
)
from refine.shapes.world import Obj, Scene, random_scene

RED_CIRCLE = Obj("circle", "red", "large", (0, 0))
BLUE_SQUARE = Obj("square", "blue", "small", (1, 1))
SCENE = Scene("white", (RED_CIRCLE, BLUE_SQUARE))


def test_categories_cover_imgedit_plus_swap():
    assert CATEGORIES == ("add", "remove", "replace", "recolor", "move", "resize", "background", "swap", "hybrid")


@pytest.mark.parametrize(
    "edit, expected",
    [
        (Add(Obj("triangle", "green", "small", (2, 2))), Scene("white", (RED_CIRCLE, BLUE_SQUARE, Obj("triangle", "green", "small", (2, 2))))),
        (Remove((0, 0)), Scene("white", (BLUE_SQUARE,))),
        (Replace((0, 0), "diamond"), Scene("white", (Obj("diamond", "red", "large", (0, 0)), BLUE_SQUARE))),
        (Recolor((1, 1), "yellow"), Scene("white", (RED_CIRCLE, Obj("square", "yellow", "small", (1, 1))))),
        (Move((0, 0), (2, 0)), Scene("white", (Obj("circle", "red", "large", (2, 0)), BLUE_SQUARE))),
        (Resize((1, 1), "large"), Scene("white", (RED_CIRCLE, Obj("square", "blue", "large", (1, 1))))),
        (Background("black"), Scene("black", (RED_CIRCLE, BLUE_SQUARE))),
        (Swap((0, 0), (1, 1)), Scene("white", (Obj("circle", "red", "large", (1, 1)), Obj("square", "blue", "small", (0, 0))))),
        (Hybrid(Recolor((0, 0), "green"), Move((1, 1), (2, 2))), Scene("white", (Obj("circle", "green", "large", (0, 0)), Obj("square", "blue", "small", (2, 2))))),
    ],
)
def test_apply_edit_gives_the_exact_target(edit, expected):
    assert apply_edit(SCENE, edit) == expected
    assert edit_from_dict(edit.to_dict()) == edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (Add(Obj("triangle", "green", "small", (0, 0))), "cannot add in the top left corner"),
        (Remove((2, 2)), "no object in the bottom right corner"),
        (Replace((0, 0), "circle"), "new shape other than 'circle'"),
        (Recolor((0, 0), "white"), "hides the object"),
        (Move((0, 0), (1, 1)), "the cell is taken"),
        (Resize((0, 0), "large"), "other size"),
        (Background("red"), "would hide the red object"),
        (Background("white"), "already white"),
        (Hybrid(Recolor((0, 0), "green"), Move((0, 0), (2, 2))), "touch the same thing"),
    ],
)
def test_invalid_edits_are_refused_with_the_reason(edit, message):
    with pytest.raises(InputError, match=message):
        apply_edit(SCENE, edit)


def test_scenes_keep_one_to_four_objects():
    with pytest.raises(InputError, match="only object"):
        apply_edit(Scene("white", (RED_CIRCLE,)), Remove((0, 0)))
    full = Scene("white", tuple(Obj("circle", "red", "small", (0, c)) for c in range(3)) + (BLUE_SQUARE,))
    assert "add" not in feasible_categories(full)
    with pytest.raises(InputError, match="no add edit applies"):
        random_edit(full, random.Random(0), "add")


def test_swapping_identical_objects_is_not_an_edit():
    twins = Scene("white", (Obj("circle", "red", "large", (0, 0)), Obj("circle", "red", "large", (2, 2))))
    assert "swap" not in feasible_categories(twins)


def test_random_edits_always_change_the_scene_validly():
    rng = random.Random(1)
    seen = set()
    for _ in range(150):
        scene = random_scene(rng)
        for category in feasible_categories(scene):
            edit = random_edit(scene, rng, category)
            target = apply_edit(scene, edit)
            seen.add(edit.category)
            assert edit.category == category and target != scene and 1 <= len(target.objects) <= 4
            assert edit_from_dict(edit.to_dict()) == edit
    assert seen == set(CATEGORIES)


def test_random_edit_is_seeded():
    scene = random_scene(random.Random(2), n_objects=3)
    assert [random_edit(scene, random.Random(i)) for i in range(10)] == [random_edit(scene, random.Random(i)) for i in range(10)]
