import random

import pytest

from refine.errors import InputError
from refine.shapes.data import seeded_rng
from refine.shapes.edits import Add, Background, Hybrid, Move, Recolor, Remove, Replace, Resize, Swap
from refine.shapes.instructions import MAX_TOKENS, STYLES, VOCABULARY, direct_phrasing, phrase, tokenize
from refine.shapes.world import Obj, Scene

SCENE = Scene(
    "white",
    (
        Obj("circle", "red", "large", (0, 0)),
        Obj("triangle", "blue", "small", (1, 1)),
        Obj("circle", "green", "small", (2, 2)),
    ),
)


def all_phrasings(edit, scene, style, n=300):
    return {phrase(edit, scene, random.Random(seed), style) for seed in range(n)}


@pytest.mark.parametrize(
    "edit, text",
    [
        (Add(Obj("square", "yellow", "large", (0, 2))), "add a large yellow square in the top right corner"),
        (Remove((1, 1)), "remove the blue triangle"),
        (Replace((0, 0), "diamond"), "replace the red circle with a diamond"),
        (Recolor((2, 2), "orange"), "make the green circle orange"),
        (Move((1, 1), (2, 0)), "move the blue triangle to the bottom left corner"),
        (Resize((0, 0), "small"), "make the red circle smaller"),
        (Background("black"), "make the background black"),
        (Swap((0, 0), (1, 1)), "swap the red circle and the blue triangle"),
        (Hybrid(Remove((0, 0)), Recolor((2, 2), "red")), "remove the red circle, then make the green circle red"),
    ],
)
def test_direct_phrasing_is_canonical(edit, text):
    assert direct_phrasing(edit, SCENE) == text


def test_direct_names_add_size_then_cell_only_when_needed():
    twins = Scene("black", (Obj("circle", "red", "large", (0, 0)), Obj("circle", "red", "small", (0, 1)), Obj("circle", "red", "small", (2, 2))))
    assert direct_phrasing(Remove((0, 0)), twins) == "remove the large red circle"
    assert direct_phrasing(Remove((2, 2)), twins) == "remove the red circle in the bottom right corner"


def test_hybrid_second_part_is_phrased_against_the_intermediate_scene():
    scene = Scene("white", (Obj("circle", "red", "large", (0, 0)), Obj("square", "blue", "small", (1, 1))))
    edit = Hybrid(Recolor((1, 1), "red"), Remove((0, 0)))
    # after the recolor the blue square is red, so "the red circle" is still unique but the square is red
    assert direct_phrasing(edit, scene) == "make the blue square red, then remove the red circle"


def test_paraphrases_vary_for_both_styles():
    for style in STYLES:
        assert len(all_phrasings(Recolor((0, 0), "blue"), SCENE, style, n=40)) >= 4


def test_indirect_phrasings_need_reasoning_for_the_issue_examples():
    texts = all_phrasings(Recolor((0, 0), "blue"), SCENE, "indirect")
    assert "paint the red circle the colour of the sky" in texts
    assert "make the largest object the same colour as the blue triangle" in texts
    removes = all_phrasings(Remove((1, 1)), SCENE, "indirect")
    assert "remove the shape with three corners" in removes
    assert not any("blue triangle" in t for t in removes)  # never just the direct name


def test_ambiguous_references_are_never_used():
    # two circles: "the round shape" is ambiguous for either circle ("the red round shape" is not)
    texts = all_phrasings(Remove((0, 0)), SCENE, "indirect")
    assert not any("the round shape" in t or "the shape with no corners" in t for t in texts)
    assert any("the red round shape" in t for t in texts)
    # the red circle is the only large object (-> "the largest object"); the two small ones have no superlative
    assert not any("smallest" in t for t in all_phrasings(Remove((2, 2)), SCENE, "indirect"))
    # "left of" must also hold read loosely: with an object up-left of the anchor, "left of" is ambiguous
    scene = Scene("white", (Obj("square", "red", "small", (0, 0)), Obj("circle", "green", "small", (1, 0)), Obj("diamond", "blue", "large", (1, 2))))
    texts = all_phrasings(Remove((1, 0)), scene, "indirect")
    assert not any("to the left of the blue diamond" in t for t in texts)
    strict = Scene("white", (Obj("circle", "green", "small", (1, 0)), Obj("diamond", "blue", "large", (1, 2))))
    assert any("the object to the left of the blue diamond" in t for t in all_phrasings(Remove((1, 0)), strict, "indirect"))


def test_relative_moves_and_destinations():
    scene = Scene("white", (Obj("circle", "red", "large", (0, 0)), Obj("square", "blue", "small", (1, 1)), Obj("triangle", "green", "small", (0, 2)), Obj("diamond", "black", "small", (2, 0))))
    texts = all_phrasings(Move((0, 0), (2, 2)), scene, "indirect")
    assert any(t.endswith("to the opposite corner") for t in texts)
    assert any(t.endswith("to the empty corner") for t in texts)
    assert any(t.endswith("directly to the right of the black diamond") for t in all_phrasings(Move((0, 0), (2, 1)), scene, "indirect"))
    assert any(t.endswith("one cell down") for t in all_phrasings(Move((0, 0), (1, 0)), scene, "indirect"))


def test_vocabulary_is_closed_and_tight(bench, mt):
    used = set()
    cases = list(bench) + [c for seq in mt for c in seq.cases]
    for case in cases:
        for text in (case.instruction, case.direct_instruction):
            tokens = tokenize(text)
            assert set(tokens) <= set(VOCABULARY), text
            assert len(tokens) <= MAX_TOKENS, text
            used.update(tokens)
    for case in bench[::3]:
        used.update(tokenize(phrase(case.edit, case.source, seeded_rng(case.id), "indirect")))
    assert VOCABULARY == sorted(VOCABULARY) and set(VOCABULARY) == used  # every word is reachable
    assert all(w == w.lower() and " " not in w for w in VOCABULARY)


def test_phrase_refuses_bad_style_and_inapplicable_edits():
    with pytest.raises(InputError, match="unknown phrasing style"):
        phrase(Remove((0, 0)), SCENE, random.Random(0), style="poetic")
    with pytest.raises(InputError, match="no object in the top middle"):
        phrase(Remove((0, 1)), SCENE, random.Random(0))


def test_phrase_is_seeded():
    edit = Hybrid(Move((0, 0), (2, 0)), Background("yellow"))
    assert [phrase(edit, SCENE, random.Random(i), "indirect") for i in range(10)] == [phrase(edit, SCENE, random.Random(i), "indirect") for i in range(10)]
