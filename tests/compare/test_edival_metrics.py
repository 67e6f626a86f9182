"""EdiVal's official metrics (judge.scheme: official): rules over detections, per-turn aggregation, the tiny-model run.

The rules are checked on hand-built detections against hand-computed verdicts; the aggregation on
hand-computed tables; the models (a tiny random-weight Grounding DINO and DINOv2, saved and loaded
back with `from_pretrained`) through `refine compare` on a folder holding the vendored slice of
EdiVal's released CSV (tests/compare/data/edival), through the `refine compare` command.
"""

import json
import math
from pathlib import Path

import pytest
import yaml
from PIL import Image, ImageDraw

from refine.cli import main
from refine.compare.benchmarks.edival import EdiValBench
from refine.compare.benchmarks.edival_metrics import (
    Detections, DetectorSpec, Verdict, background_kept, count_change, metrics_label, parse_instruction, position_change,
    run_turn_table, subject_add, subject_remove, subject_replace, turn_table,
)
from refine.errors import ConfigError, InputError
from refine.testing.benchmark_folders import write_edival_folder
from refine.types import EditResult

SLICE = Path(__file__).parent / "data" / "edival" / "oai_instruction_generation_output.csv"
SCRIPTED = "refine.testing.scripted_vlm:ScriptedVLM"


def det(*boxes, scores=None):
    return Detections(list(boxes), list(scores or [0.9 - 0.1 * i for i in range(len(boxes))]))


NONE = det()
LEFT = det((0.1, 0.4, 0.3, 0.6))  # centre (0.2, 0.5)
RIGHT = det((0.6, 0.4, 0.8, 0.6))  # centre (0.7, 0.5)
NEAR_RIGHT = det((0.62, 0.1, 0.82, 0.3))  # centre (0.72, 0.2): 0.02 right of RIGHT, 0.3 above it

# (rule, expected verdict): each worked out by hand from EdiVal's rule for that task type
RULES = [
    (lambda: subject_add(LEFT, RIGHT, "left"), True),          # 0.2 - 0.7 = -0.5 < -0.03
    (lambda: subject_add(NEAR_RIGHT, RIGHT, "right"), False),  # 0.72 - 0.7 = 0.02, not beyond the 0.03 margin
    (lambda: subject_add(NEAR_RIGHT, RIGHT, "above"), True),   # 0.2 - 0.5 = -0.3
    (lambda: subject_add(LEFT), True),                         # no reference: detected is enough
    (lambda: subject_add(NONE, RIGHT, "left"), False),
    (lambda: subject_remove(LEFT, NONE), True),                # gone
    (lambda: subject_remove(LEFT, LEFT), False),               # IoU 1
    (lambda: subject_remove(LEFT, det((0.2, 0.4, 0.4, 0.6))), False),  # IoU 0.02 / 0.06 = 1/3 >= 0.2
    (lambda: subject_remove(LEFT, det((0.25, 0.4, 0.45, 0.6))), True),  # IoU 0.01 / 0.07 = 1/7 < 0.2: another object
    (lambda: subject_remove(NONE, NONE), False),               # nothing to remove in the input
    (lambda: subject_replace(LEFT, det((0.29, 0.0, 0.5, 0.45))), True),  # boxes touch: IoU > 0
    (lambda: subject_replace(LEFT, RIGHT), False),
    (lambda: count_change(LEFT, det((0, 0, 0.2, 0.2), (0, 0, 0.2, 0.19), (0.5, 0.5, 0.7, 0.7)), "2"), True),  # IoU 0.95 counts once
    (lambda: count_change(LEFT, det((0, 0, 0.2, 0.2), (0.5, 0.5, 0.7, 0.7)), 3), False),
    (lambda: count_change(NONE, RIGHT, 1), False),             # the object must be in the input too
    (lambda: position_change(RIGHT, LEFT, RIGHT, LEFT, RIGHT.top(), LEFT.top(), "left"), True),
    (lambda: position_change(RIGHT, LEFT, RIGHT, det((0.1, 0.4, 0.3, 0.6), (0.0, 0.0, 0.05, 0.05)), RIGHT.top(), LEFT.top(), "left"), False),  # count 1 -> 2
    (lambda: position_change(RIGHT, LEFT, RIGHT, LEFT, (0.0, 0.0, 1.0, 1.0), LEFT.top(), "left"), False),  # containment
    (lambda: position_change(RIGHT, LEFT, RIGHT, LEFT, RIGHT.top(), LEFT.top(), "below"), False),  # same height
    (lambda: background_kept([LEFT, RIGHT]), True),
    (lambda: background_kept([LEFT, det((0.0, 0.0, 0.95, 0.99))]), False),  # a box over the whole image
    (lambda: background_kept([LEFT, NONE]), False),
]


def test_rules_on_hand_built_detections_give_the_hand_computed_instruction_following():
    verdicts = [rule() for rule, _ in RULES]
    assert all(isinstance(v, Verdict) and v.reason for v in verdicts)
    assert [v.passed for v in verdicts] == [expected for _, expected in RULES]
    # IF is 100 x the share of passed turns: 9 of the 22 above
    assert 100.0 * sum(v.passed for v in verdicts) / len(verdicts) == pytest.approx(900 / 22)


def test_formatted_instructions_of_the_released_csv_parse_per_task_type():
    assert parse_instruction("subject_add", "Add [fish] on the [below] of [brown fur bear]") == {
        "object": "fish", "position": "below", "reference": "brown fur bear"}
    assert parse_instruction("count_change", '"Change the count of [painted white leaf pattern] to [4]"') == {
        "object": "painted white leaf pattern", "count": "4"}
    assert parse_instruction("material_alter", "Change the material of [fish] to [glass]") == {"object": "fish", "material": "glass"}
    assert parse_instruction("text_change", "Add text '[OPEN]' on the image") == {"text": "OPEN"}
    assert parse_instruction("subject_remove", "Add [fish]") is None  # the wrong type's format is not read


def test_turn_table_is_edival_o_per_turn_on_a_hand_computed_table():
    cases = [
        [{"if": 100.0, "cc": 81.0}, {"if": 0.0, "cc": 64.0}, {"if": 100.0, "cc": None}],  # no CC after a background change
        [{"if": 0.0, "cc": 49.0}, {"if": 100.0, "cc": 36.0}, {"if": 100.0, "cc": 25.0}],
    ]
    table = turn_table(cases)
    assert [(t["if"], t["cc"]) for t in table] == [(50.0, 65.0), (50.0, 50.0), (100.0, 25.0)]
    assert [t["o"] for t in table] == pytest.approx([math.sqrt(50 * 65), 50.0, 50.0])  # sqrt of the means, per turn


def official_bench(tmp_path, **kwargs):
    root = write_edival_folder(tmp_path / "EdiVal", csv_text=SLICE.read_text())
    judge = {"backend": {"kind": SCRIPTED, "model": "Qwen2-VL-7B-Instruct"}, "scheme": "official", **kwargs.pop("judge", {})}
    return EdiValBench(str(root), judge, **kwargs)


def test_each_turn_reads_its_prefix_row_of_the_released_csv(tmp_path):
    bench = official_bench(tmp_path)  # listing cases loads no model
    case = {c.id: c for c in bench.cases()}["0"]
    info = case.meta["turn_info"]
    assert [t["task_type"] for t in info] == ["subject_add", "count_change", "background_change"]
    assert info[1]["format_instruction"] == "Change the count of [painted white leaf pattern] to [4]"
    assert [t["bg_consistency"] for t in info] == [True, True, False]
    assert info[0]["unchanged_objects"] == ["painted white leaf pattern"] and info[1]["unchanged_objects"] == []
    assert info[2]["all_objects"] == ["painted white leaf pattern", "bench"]
    assert parse_instruction("background_change", info[2]["instruction"])["keep"] == "painted white leaf pattern, bench"
    assert bench.metrics == ("overall", "if", "cc", "if_t1", "if_t2", "if_t3", "cc_t1", "cc_t2", "cc_t3")


class FakeScorer:
    """Verdicts by task type and CC by turn, recording which images each metric compared."""

    def __init__(self):
        self.calls = []

    def instruction_following(self, source, target, turn):
        self.calls.append(("if", source.getpixel((0, 0)), target.getpixel((0, 0))))
        return Verdict(turn["task_type"] != "count_change", "scripted")

    def consistency(self, base, target, unchanged, all_objects):
        self.calls.append(("cc", base.getpixel((0, 0)), target.getpixel((0, 0))))
        return {"cc": {(1, 1, 1): 80.0, (2, 2, 2): 60.0}[target.getpixel((0, 0))]}


def test_case_scores_aggregate_turns_as_edival_on_a_hand_computed_table(tmp_path):
    bench = official_bench(tmp_path)
    bench._scorer = FakeScorer()
    case = {c.id: c for c in bench.cases()}["0"]
    outputs = [Image.new("RGB", (32, 32), (k, k, k)) for k in (1, 2, 3)]
    score = bench.score([(case, [EditResult(image, text, []) for image, text in zip(outputs, case.instructions)])])[0]
    # IF per turn: add 100, count 0, background 100; CC: 80, 60, none (bg_consistency False after the background change)
    assert [t["if"] for t in score.turn_scores] == [100.0, 0.0, 100.0]
    assert [t["cc"] for t in score.turn_scores] == [80.0, 60.0, None]
    assert [t["overall"] for t in score.turn_scores] == [pytest.approx(math.sqrt(8000)), 0.0, None]
    assert score.scores["if"] == pytest.approx(200 / 3) and score.scores["cc"] == pytest.approx(70.0)
    assert score.scores["overall"] == pytest.approx(math.sqrt(200 / 3 * 70))
    assert score.scores["if_t2"] == 0.0 and score.scores["cc_t3"] is None
    source = case.source_image().getpixel((0, 0))
    # IF compares the previous turn's output with this one's; CC the input with this one's
    assert bench._scorer.calls == [
        ("if", source, (1, 1, 1)), ("cc", source, (1, 1, 1)), ("if", (1, 1, 1), (2, 2, 2)), ("cc", source, (2, 2, 2)),
        ("if", (2, 2, 2), (3, 3, 3)),
    ]


def edival_checkout(root):
    """An EdiVal checkout's detector/instruction_detector.py: the VLM question constants, our texts with markers."""
    path = root / "detector" / "instruction_detector.py"
    path.parent.mkdir(parents=True)
    names = {
        "VLM_DD_ADD_OBJECT_PROMPT": "ADD-MARK {object_name}", "VLM_DD_REPLACE_PROMPT": "REPLACE-MARK {object_name} {new_object}",
        "VLM_DD_COLOR_ALTER_PROMPT": "COLOR-MARK {instruction}", "VLM_DD_MATERIAL_ALTER_PROMPT": "MATERIAL-MARK {instruction}",
        "VLM_TEXT_PROMPT": "TEXT-MARK", "VLM_BACKGROUND_PROMPT": "BACKGROUND-MARK [{background}]",
    }
    path.write_text("from vllm import LLM\n" + "".join(f'{k} = """\n{v}\n"""\n' for k, v in names.items()))
    return root


def test_official_metrics_refuse_what_they_cannot_honour_and_label_what_they_use(tmp_path):
    backend = {"kind": SCRIPTED}
    plain = write_edival_folder(tmp_path / "plain", cases=1)  # our generated CSV: no format_instructions etc.
    with pytest.raises(ConfigError, match="only with judge.scheme: official"):
        EdiValBench(str(plain), {"backend": backend}, detector={"model": "x"})
    with pytest.raises(InputError, match="unchanged_objects, all_objects"):
        EdiValBench(str(plain), {"backend": backend, "scheme": "official"})
    with pytest.raises(InputError, match="detector/instruction_detector.py"):
        official_bench(tmp_path / "a", judge={"prompts": str(tmp_path / "no-checkout")})
    with pytest.raises(ConfigError):
        official_bench(tmp_path / "b", detector={"modle": "typo"})
    ours = official_bench(tmp_path / "c")
    theirs = official_bench(tmp_path / "d", judge={"prompts": str(edival_checkout(tmp_path / "EdiVal-code"))})
    assert theirs.questions["VLM_DD_ADD_OBJECT_PROMPT"].strip() == "ADD-MARK {object_name}"
    assert ours.protocol_label.startswith("official-metrics (detector grounding-dino-tiny; features dinov2-base, not EdiVal's")
    assert ours.protocol_label.endswith("refine's wording of EdiVal's VLM questions)")
    assert theirs.protocol_label.endswith("EdiVal's VLM prompts)") and ours.judge_key != theirs.judge_key
    assert official_bench(tmp_path / "e", detector={"features": "facebook/dinov3-vitb16-pretrain-lvd1689m"}).judge_key != ours.judge_key
    refine_judge = EdiValBench(str(plain), {"backend": backend})
    assert refine_judge.protocol_label == "refine-judge" and refine_judge.metrics == ("overall", "if", "cc")
    assert "not EdiVal's" not in metrics_label(
        DetectorSpec(features="facebook/dinov3-vitb16-pretrain-lvd1689m"), "Qwen/Qwen2-VL-7B-Instruct", prompts_read=True)


@pytest.fixture(scope="module")
def tiny_models():
    from refine.testing.tiny_detector import tiny_grounding_dino_dir
    from refine.testing.tiny_vlm import tiny_dinov2_dir

    return {"model": str(tiny_grounding_dino_dir()), "features": str(tiny_dinov2_dir()), "image_size": 64}


class RecordingVLM:
    """Answers every question with `answer` and keeps (number of images, question) per call."""

    def __init__(self, answer):
        self.answer, self.asked = answer, []

    def __call__(self, images, texts):
        self.asked += [(len(i), t) for i, t in zip(images, texts)]
        return [self.answer] * len(texts)


@pytest.fixture(scope="module")
def tiny_scorer(tiny_models):
    from refine.compare.benchmarks.edival_detector import EdiValScorer

    vlm = RecordingVLM("yes, it reads OPEN")
    return EdiValScorer(DetectorSpec(**tiny_models), ask=vlm), vlm


def drawn():
    base = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(base).rectangle([8, 8, 40, 40], fill=(200, 40, 40))
    changed = base.copy()
    ImageDraw.Draw(changed).ellipse([0, 30, 63, 63], fill=(20, 160, 240))
    return base, changed


@pytest.mark.slow(minutes=0.5)
def test_consistency_from_tiny_dino_features_drops_when_the_input_changes(tiny_scorer):
    scorer, _ = tiny_scorer
    base, changed = drawn()
    same = scorer.consistency(base, base, ["bench"], ["bench", "tree"])
    moved = scorer.consistency(base, changed, ["bench"], ["bench", "tree"])
    assert same["cc"] == pytest.approx(100.0, abs=1e-3) and same["background_pixel"] == pytest.approx(1.0)
    assert moved["cc"] < same["cc"] - 1.0  # the random tiny DINOv2 still sees the change
    assert scorer.consistency(base, changed, [], [])["cc"] is None  # nothing to compare: no CC, as EdiVal
    # the detector's threshold is applied per query; boxes come back normalised x1 <= x2, y1 <= y2
    everything, nothing = scorer.detector([(base, ["bench"], 0.0), (base, ["painted white leaf pattern", "tree"], 1.0)])  # padded batch
    assert len(everything) == 10 and len(nothing) == 0  # the tiny model's 10 queries
    assert all(-0.5 <= b[0] <= b[2] <= 1.5 and -0.5 <= b[1] <= b[3] <= 1.5 for b in everything.boxes)


FORMATTED = {  # one formatted instruction per EdiVal task type, in the released CSV's form
    "subject_add": "Add [bench] on the [left] of [tree]", "subject_remove": "Remove [bench]",
    "subject_replace": "Replace [benches] with [trees]", "color_alter": "Change the color of [bench] to [red]",
    "material_alter": "Change the material of [bench] to [glass]", "text_change": "Add text '[OPEN]' on the image",
    "count_change": "Change the count of [bench] to [2]", "position_change": "Change the position of [bench] to [left] of [tree]",
    "background_change": "Change the background to [forest]",
}


@pytest.mark.slow(minutes=0.5)
def test_every_task_type_runs_through_the_tiny_detector_and_asks_the_vlm_where_edival_does(tiny_scorer):
    scorer, vlm = tiny_scorer
    base, changed = drawn()
    asked = {}
    for kind, text in FORMATTED.items():
        start = len(vlm.asked)
        instruction = "Change the background to forest, remain the bench unchanged" if kind == "background_change" else text
        verdict = scorer.instruction_following(base, changed, {"task_type": kind, "instruction": instruction, "format_instruction": text})
        assert isinstance(verdict, Verdict) and verdict.reason, kind
        asked[kind] = vlm.asked[start:]
        if kind in ("color_alter", "material_alter"):  # decided by the VLM alone: its "yes" passes
            assert verdict.passed and asked[kind] == [(2, asked[kind][0][1])] and text in asked[kind][0][1]
        if kind == "text_change":  # the whole output is read (no object named); the answer holds the new text
            assert verdict.passed and asked[kind][0][0] == 1 and "text" in asked[kind][0][1].lower()
    assert [n for n, _ in asked["subject_add"]] == [2] and "bench" in asked["subject_add"][0][1]  # the pre-check
    assert "benches" in asked["subject_replace"][0][1] and "trees" in asked["subject_replace"][0][1]
    assert asked["subject_remove"] == asked["count_change"] == asked["position_change"] == []  # detector only
    if asked["background_change"]:  # asked only once the kept bench is found
        assert asked["background_change"][0][0] == 1 and "forest" in asked["background_change"][0][1]


@pytest.mark.slow(minutes=1)
def test_refine_compare_runs_edival_official_metrics_with_tiny_models(tmp_path, tiny_models, capsys):
    root = write_edival_folder(tmp_path / "EdiVal", csv_text=SLICE.read_text())
    answers = {"MATERIAL-MARK Change the material of [fish] to [glass]": "Yes (asked from the checkout)", "ADD-MARK": "NO"}
    judge = {"backend": {"kind": SCRIPTED, "answers": answers, "default": "no", "model": "Qwen2-VL-7B-Instruct"},
             "scheme": "official", "prompts": str(edival_checkout(tmp_path / "EdiVal-code"))}
    config = tmp_path / "edival.yaml"
    config.write_text(yaml.safe_dump({
        "benchmark": {"kind": "edival", "root": str(root), "judge": judge, "detector": tiny_models},
        "editor": {"kind": "refine.testing.compare_fakes:paint_editor"},  # no colour words: every turn keeps the input
        "entries": {"base": {}}, "progress": False, "bootstrap": 200,
    }))
    out = tmp_path / "out"
    main(["compare", str(config), "--out", str(out)])  # `refine compare edival.yaml --out out`
    assert "edival : 2 cases" in capsys.readouterr().out
    assert (out / "summary.md").read_text().startswith("# edival [official-metrics (detector refine-tiny-grounding-dino")
    rows = {r["case_id"]: r for r in map(json.loads, (out / "cases.jsonl").read_text().splitlines())}
    first, second = rows["0"], rows["1"]
    # unchanged outputs are fully consistent where EdiVal measures CC (turns 1-2 of image 0; never for image 1)
    assert first["scores"]["cc_t1"] == pytest.approx(100.0, abs=1e-3) and first["scores"]["cc_t2"] == pytest.approx(100.0, abs=1e-3)
    assert first["scores"]["cc_t3"] is None and second["scores"]["cc"] is None and second["scores"]["overall"] is None
    # the add pre-check asked the checkout's question and got NO; the material turn (a VLM check) its YES
    assert first["details"]["turns"][0]["if_reason"].startswith("VLM pre-check") and first["scores"]["if_t1"] == 0.0
    assert second["scores"]["if_t3"] == 100.0 and "checkout" in second["details"]["turns"][2]["if_reason"]
    assert all(v in (0.0, 100.0) for r in rows.values() for k, v in r["scores"].items() if k.startswith("if_t"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["judge_protocol"]["label"].endswith("VLM Qwen2-VL-7B-Instruct, EdiVal's VLM prompts)")
    assert "cc_t2" in summary["metrics"]
    table = run_turn_table(out, "base")  # EdiVal's per-turn table from the run's cases.jsonl, as the report gives it
    assert summary["turn_tables"]["base"] == table and "Per turn, base" in (out / "summary.md").read_text()
    assert [row["n"] for row in table] == [2, 2, 2] and table[2]["cc"] is None and table[2]["o"] is None
    assert table[0]["if"] == pytest.approx((first["scores"]["if_t1"] + second["scores"]["if_t1"]) / 2)
    assert table[0]["o"] == pytest.approx(math.sqrt(table[0]["if"] * table[0]["cc"]))
