import dataclasses
import itertools
import math

import pytest
from PIL import Image, ImageFilter

from refine.errors import InputError
from refine.shapes.data import ShapeCase, load_split
from refine.shapes.degrade import degrade, noise_image
from refine.shapes.edits import Add, Background, Hybrid, Recolor, Remove
from refine.shapes.judge import judge_edit, judge_meta, judge_sequence, parse_image, parse_scene, success_rates
from refine.shapes.world import COLOR_NAMES, POSITIONS, SHAPES, SIZES, Obj, Scene, render


def test_parses_every_shape_size_and_colour_pair_exactly_and_under_noise():
    positions = itertools.cycle(POSITIONS)
    for (shape, size), (background, color) in itertools.product(itertools.product(SHAPES, SIZES), itertools.permutations(COLOR_NAMES, 2)):
        scene = Scene(background, (Obj(shape, color, size, next(positions)),))
        image = render(scene)
        assert parse_scene(image) == scene
        if color < background:  # half of the ordered pairs, to keep the test fast
            assert parse_scene(degrade(image, noise=8 / 255, blur=1.0, seed=len(color))) == scene, scene.describe()


def test_exact_targets_score_perfectly_on_both_splits(bench, mt):
    for case in bench:
        score = judge_edit(case.source_image, case.target_image, case)
        assert (score.if_, score.cc, score.pq, score.overall) == (1.0, 1.0, 1.0, 1.0), (case.id, score.breakdown)
    for seq in mt:
        result = judge_sequence(seq, seq.target_images)
        assert result.if_ == [1.0] * 3 and result.cc_original == [1.0] * 3 and result.success_at_turn == [True] * 3, seq.id


def test_unedited_source_gets_no_instruction_following(bench):
    for case in bench:
        score = judge_edit(case.source_image, case.source_image, case)
        assert score.if_ == 0.0 and score.cc == 1.0 and score.overall == 0.0, (case.id, score.breakdown)


@pytest.mark.parametrize("blur", ["gaussian", "box"])
def test_robust_to_noise_and_one_pixel_blur(bench, blur):
    for i, case in enumerate(bench):
        if blur == "box" and i % 3:
            continue  # a third of the split for the second blur kind keeps the test fast
        image = case.target_image
        image = image.filter(ImageFilter.GaussianBlur(1)) if blur == "gaussian" else image.filter(ImageFilter.BoxBlur(1))
        score = judge_edit(case.source_image, degrade(image, noise=8 / 255, blur=0, seed=i), case)
        assert score.if_ >= 0.95 and score.cc >= 0.95, (case.id, score.breakdown)
        assert 0.3 < score.pq < 1.0


def test_64_pixel_targets(bench):
    big = load_split("shapes-bench", 64)
    for i, case in enumerate(big[::45]):
        assert judge_edit(case.source_image, case.target_image, case).overall == 1.0
        noisy = judge_edit(case.source_image, degrade(case.target_image, seed=i), case)
        assert noisy.if_ >= 0.95 and noisy.cc >= 0.95, (case.id, noisy.breakdown)


SCENE = Scene("white", (Obj("circle", "red", "large", (0, 0)), Obj("square", "blue", "small", (1, 1)), Obj("triangle", "green", "large", (2, 2))))


def case_for(edit, instruction="an instruction"):
    return ShapeCase.build("test", SCENE, edit, instruction)


def score_scene(case, scene):
    return judge_edit(case.source_image, render(scene), case)


def test_catches_a_wrong_colour():
    case = case_for(Recolor((0, 0), "yellow"))
    score = score_scene(case, SCENE.with_object(Obj("circle", "orange", "large", (0, 0))))
    assert score.if_ == 0.0 and score.cc == 1.0
    assert any("should get color yellow: found a large orange circle" in line for line in score.breakdown)


def test_catches_a_wrong_object_with_partial_credit():
    case = case_for(Add(Obj("diamond", "purple", "small", (0, 2))))
    score = score_scene(case, SCENE.with_object(Obj("square", "purple", "small", (0, 2))))
    assert 0.0 < score.if_ < 1.0 and score.cc == 1.0
    assert score.if_ == pytest.approx(0.75)  # present + colour + size right, shape wrong


def test_change_made_to_the_wrong_object_drops_consistency():
    case = case_for(Recolor((0, 0), "yellow"))
    score = score_scene(case, SCENE.with_object(Obj("square", "yellow", "small", (1, 1))))
    assert score.if_ == 0.0 and score.cc < 1.0
    assert any("[part] the small blue square in the center should stay: found a small yellow square" in line for line in score.breakdown)


def test_collateral_changes_drop_consistency_not_instruction_following():
    case = case_for(Remove((1, 1)))
    moved = Scene("white", (Obj("circle", "red", "large", (0, 1)), Obj("triangle", "green", "large", (2, 2))))
    extra = case.target.with_object(Obj("circle", "black", "small", (1, 0)))
    background = Scene("black", case.target.objects)
    for scene in (moved, extra, background):
        score = score_scene(case, scene)
        assert score.if_ == 1.0 and score.cc <= 0.75, scene.describe()


def test_hybrid_if_is_graded_per_required_change():
    case = case_for(Hybrid(Recolor((0, 0), "yellow"), Background("black")))
    half = score_scene(case, SCENE.with_object(Obj("circle", "yellow", "large", (0, 0))))
    assert half.if_ == 0.5 and half.cc == 1.0 and half.overall == pytest.approx(math.sqrt(0.5))


def test_random_noise_scores_near_zero(bench):
    scores = [judge_edit(c.source_image, noise_image(32, seed=i), c) for i, c in enumerate(bench[::5])]
    assert max(s.overall for s in scores) <= 0.1
    assert max(s.pq for s in scores) <= 0.05


def test_flat_grey_is_not_a_clean_image(bench):
    score = judge_edit(bench[0].source_image, Image.new("RGB", (32, 32), (128, 128, 128)), bench[0])
    assert score.pq < 0.3 and score.overall == 0.0


def test_stray_marks_count_against_quality_and_cells():
    image = render(SCENE)
    for x, y in [(14, 3), (15, 3), (14, 4), (15, 4)]:  # a 2x2 blob in the empty top middle cell
        image.putpixel((x, y), (0, 0, 0))
    parsed = parse_image(image)
    assert parsed.cell((0, 1)).clutter and parsed.stray_pixels == 4 and parsed.pq < 0.6
    case = case_for(Remove((1, 1)))
    assert judge_edit(case.source_image, case.target_image, case).cc == 1.0
    cluttered = case.target_image
    for x, y in [(14, 3), (15, 3), (14, 4), (15, 4)]:
        cluttered.putpixel((x, y), (0, 0, 0))
    assert judge_edit(case.source_image, cluttered, case).cc < 1.0


def test_score_scales_and_dict():
    case = case_for(Recolor((0, 0), "yellow"))
    score = judge_edit(case.source_image, case.target_image, case)
    data = score.to_dict()
    assert data["if"] == 1.0 and data["gedit_sc"] == 10.0 and data["gedit_o"] == 10.0 and data["overall_10"] == 10.0
    assert Scene.from_dict(data["parsed"]) == case.target and data["success"] is True
    assert score.breakdown[0].startswith("IF 1.00") and any(line.startswith("CC 1.00") for line in score.breakdown)


def test_mismatched_source_is_noted():
    case = case_for(Recolor((0, 0), "yellow"))
    score = judge_edit(render(Scene("black")), case.target_image, case)
    assert score.if_ == 1.0 and "note: the source image shows" in score.breakdown[-1]


def test_judge_meta_rebuilds_the_case(bench):
    case = bench[250]
    assert judge_meta(case.to_request().meta, case.target_image).overall == 1.0
    assert judge_meta(case.to_request().meta, case.source_image).if_ == 0.0
    with pytest.raises(InputError, match="no 'shapes_case'"):
        judge_meta({"case_id": case.id}, case.target_image)


def test_resizes_other_sizes_and_refuses_non_square():
    case = load_split("shapes-bench")[40]
    assert judge_edit(case.source_image, case.target_image.resize((64, 64), Image.NEAREST), case).overall == 1.0
    with pytest.raises(InputError, match="cannot parse a 40x32 image"):
        parse_scene(Image.new("RGB", (40, 32)))


def test_multi_turn_success_requires_every_turn_so_far(mt):
    seq = mt[3]
    targets = seq.target_images
    broken_first = [seq.source_image, *targets[1:]]  # turn 1 did nothing; later turns match their targets
    result = judge_sequence(seq, broken_first)
    assert result.if_[0] == 0.0 and result.success_at_turn == [False, False, False]
    stale_last = [targets[0], targets[1], targets[1]]
    result = judge_sequence(seq, stale_last)
    assert result.success_at_turn == [True, True, False] and result.if_[2] == 0.0
    rates = success_rates([judge_sequence(seq, targets), result])
    assert rates == [1.0, 1.0, 0.5]
    with pytest.raises(InputError, match="3 turns but 2 outputs"):
        judge_sequence(seq, targets[:2])


def test_multi_turn_consistency_is_against_the_original():
    scene = Scene("white", (Obj("circle", "red", "large", (0, 0)), Obj("square", "blue", "small", (2, 2))))
    first = ShapeCase.build("s-t1", scene, Recolor((0, 0), "green"), "make the red circle green")
    second = ShapeCase.build("s-t2", first.target, Background("black"), "make the background black")
    from refine.shapes.data import ShapeSequence

    seq = ShapeSequence("s", (first, second))
    drifted = Scene("black", (Obj("circle", "green", "large", (0, 0)), Obj("square", "blue", "large", (2, 2))))
    result = judge_sequence(seq, [first.target_image, render(drifted)])
    assert result.if_ == [1.0, 1.0] and result.cc_original[1] < 1.0
    assert dataclasses.asdict(result)["success_at_turn"] == [True, True]
    assert judge_sequence(seq, [first.target_image, render(drifted)], cc_threshold=0.9).success_at_turn == [True, False]


def test_each_check_says_its_cell_what_was_there_what_should_be_and_what_the_parser_found():
    case = case_for(Recolor((0, 0), "yellow"))
    score = score_scene(case, SCENE.with_object(Obj("square", "yellow", "small", (1, 1))))   # the wrong object recoloured
    change = [c for c in score.checks if c.kind == "change"]
    assert [(c.cell, c.was, c.expected, c.found, c.credit) for c in change] == [
        ("top left corner", "large red circle", "large yellow circle", "large red circle", 0.0)]
    kept = {c.cell: c for c in score.checks if c.kind == "keep"}
    assert (kept["center"].expected, kept["center"].found, kept["center"].credit) == ("small blue square", "small yellow square", pytest.approx(2 / 3))
    # the checks are what IF and CC average
    assert score.if_ == pytest.approx(sum(c.credit for c in change) / len(change))
    assert score.cc == pytest.approx(sum(c.credit for c in kept.values()) / len(kept))
