"""`judge.scheme: official` for KRIS-Bench and MSE-Bench: the authors' prompt files, asking, parsing and tables.

The checkouts are written from the facts vendored in tests/compare/data/{kris,mse}/prompts/ (file,
constant names, format fields, answer keys; see their PROVENANCE.md) with our own prompt texts,
each marked, so the scripted judge can answer each question; the authors' wording is not vendored.
Answers are hand-written in the forms the prompts request, and every expected number below is
worked out by hand from the authors' rules.
"""

import json
import math
from pathlib import Path

import pytest

from refine.compare import run_compare
from refine.compare.benchmarks.kris import KrisBench
from refine.compare.benchmarks.kris_official import kris_queries, kris_summary, parse_kris_dual, parse_kris_score
from refine.compare.benchmarks.mse_official import mse_question, parse_mse
from refine.compare.stats import ALL
from refine.errors import InputError
from refine.testing.benchmark_folders import MSE_SLICE, write_kris_folder, write_mse_folder

DATA = Path(__file__).parent / "data"
SCRIPTED = "refine.testing.scripted_vlm:ScriptedVLM"


def kris_checkout(root: Path, file: str | None = None, skip: tuple[str, ...] = ()) -> Path:
    """A KRIS-Bench checkout's prompt file: every constant of constants.json, our text with a MARK and its fields."""
    facts = json.loads((DATA / "kris" / "prompts" / "constants.json").read_text())
    lines = ["import os  # never executed: the constants are read with ast", "raise SystemExit('executed')", ""]
    for name, fact in facts["constants"].items():
        if name in skip:
            continue
        fields = "".join(f"::{{{field}}}" for field in fact["fields"])
        keys = ", ".join(f'"{key}": X' for key in fact["answer_keys"])
        lines.append(f'{name} = """\nMARK-{name}{fields}\nAnswer as {{{{{keys}}}}}\n"""\n')
    path = root / (file or facts["file"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return root


def mse_checkout(root: Path) -> Path:
    """VINCIE's evaluation/compute_score.py with `prompt_template` assigned as the script assigns it."""
    facts = json.loads((DATA / "mse" / "prompts" / "constants.json").read_text())
    path = root / facts["file"]
    path.parent.mkdir(parents=True)
    path.write_text(
        "import openai\nNUM_TRY = 20\n\nprompt_template = \\\n"
        '"""MSE-JUDGE {num_images} images; last turn {num_prompts} of {editing_prompt}\n'
        'Return {{"reason": "...", "prompt_following": int, "consistency": int}}\n"""\n'
    )
    return root


def config(tmp_path, benchmark, answers, *, model, default="no verdict", **judge):
    backend = {"kind": SCRIPTED, "answers": answers, "default": default, "model": model}
    return {
        "benchmark": {**benchmark, "judge": {"backend": backend, "mode": "sample", **judge}},
        "editor": {"kind": "refine.testing.compare_fakes:paint_editor"},
        "entries": {"base": {}}, "out_dir": str(tmp_path / "out"), "progress": False, "bootstrap": 200,
    }


def vendored_kris() -> dict:
    """The vendored annotation slice (tests/compare/data/kris/<category>/annotation.json), by category."""
    folders = [d for d in sorted((DATA / "kris").iterdir()) if (d / "annotation.json").is_file()]
    return {d.name: json.loads((d / "annotation.json").read_text()) for d in folders}


def test_kris_official_asks_parses_and_summarizes_as_its_scripts(tmp_path):
    root = write_kris_folder(tmp_path / "Kris_Bench", vendored_kris())  # color_change 1-2, chemistry 1-2, multi-element 1, temporal 1
    quirky_quality = '{"reasoning": "Structural coherence: ✔, 2 small seams", "quality_score": 4,}'
    answers = {
        # color_change (metrics_common.py: JSON, else "<name> score" with an optional colon, else n/5 or a lone digit)
        "MARK-prompt_consist::Change this green pepper": '{"reasoning": "same", "consistency_score": 5}',
        "MARK-prompt_instruction_following::Change this green pepper": "instruction_score: 4",
        "MARK-prompt_consist::Change this apple": "Consistency score: 3",
        "MARK-prompt_instruction_following::Change this apple": '{"instruction_score": 5, "reasoning": "ok"}',
        # chemistry (metrics_knowledge.py: the dual question; the colon is required)
        "MARK-prompt_consist::Add a piece of solid sodium": '{"consistency_score": 4}',
        "MARK-prompt_dual_evaluation::Add a piece of solid sodium": '{"instruction_score": 4, "knowledge_score": 2, "instruction_reasoning": "x"}',
        "MARK-prompt_consist::Color change of red cabbage": "Checked 2 elements; consistency score 4",  # no colon: the lone 2
        "MARK-prompt_dual_evaluation::Color change of red cabbage": 'instruction_score: 3\nknowledge_score: 1\n{"broken": }',
        # multi-element (no "<name> score" fallback: the first n/5)
        "MARK-prompt_consist_multi": "consistency_score: 5, identity 3/5",
        "MARK-prompt_instruction_multi": '{"instruction_score": 4, "reasoning": "x"}',
        # temporal
        "MARK-prompt_consist_temporal": '{"consistency_score": 3, "reasoning": "1. Detect"}',
        "MARK-prompt_instruction_temporal": "I cannot judge this",
        # the trailing comma of the requested format breaks JSON: the first lone digit 1-5 wins (2)
        "MARK-prompt_quality": quirky_quality,
    }
    checkout = kris_checkout(tmp_path / "Kris_Bench_code")
    run = run_compare(config(tmp_path, {"kind": "kris", "root": str(root)}, answers, model="gpt-4o", scheme="official", prompts=str(checkout)))
    rows = {r.case_id: r for r in run.rows}
    n = lambda s: (s - 1) * 25  # noqa: E731  (summarize.py's scale)
    assert rows["color_change/1"].details["official"] == {"consistency": 5, "instruction": 4, "quality": 2, "knowledge": None}
    assert rows["color_change/1"].scores == {
        "overall": pytest.approx((n(5) + n(4) + n(2)) / 3), "consistency": 100.0, "instruction": 75.0, "quality": 25.0, "knowledge": None,
    }
    assert rows["color_change/2"].details["official"]["consistency"] == 3
    assert rows["chemistry/1"].details["official"] == {"consistency": 4, "instruction": 4, "quality": 2, "knowledge": 2}
    assert rows["chemistry/1"].scores["overall"] == pytest.approx((75 + 75 + 25 + 25) / 4)
    assert rows["chemistry/2"].details["official"] == {"consistency": 2, "instruction": 3, "quality": 2, "knowledge": 1}
    assert rows["multi-element_composition/1"].details["official"]["consistency"] == 3
    assert rows["temporal_prediction/1"].scores["overall"] is None  # an unreadable instruction score: no guess
    protocol = json.loads((run.out_dir / "summary.json").read_text())["judge_protocol"]
    assert protocol["label"] == "official"
    table = protocol["official_summary"]["base"]
    assert table["Attribute Perception"] == {"VC": 75.0, "VQ": 25.0, "IF": 87.5, "AVG": 62.5}
    assert table["Natural Science"] == {"VC": 50.0, "VQ": 25.0, "IF": 62.5, "KP": 12.5, "AVG": 37.5}
    assert table["Temporal Prediction"] == {"VC": 50.0, "VQ": 25.0, "AVG": 37.5}
    assert table["Factual Knowledge"] == {"AVG": 56.25} and table["Procedural Knowledge"] == {"AVG": 50.0}
    assert table["Overall"] == pytest.approx(900 / 19)  # all 19 scores pooled, not the mean of case means
    assert all_row(run).metrics["overall"].mean == pytest.approx((200 / 3 + 175 / 3 + 50 + 25 + 50) / 5)
    assert "Official summary" in (run.out_dir / "summary.md").read_text()


def all_row(run):
    return next(r for r in run.summary if r.entry == "base" and r.category == ALL)


def test_kris_official_sends_the_images_with_the_scripts_labels(tmp_path):
    from refine.testing.scripted_vlm import ScriptedVLM
    from refine.types import EditResult

    root = write_kris_folder(tmp_path / "k")
    judge = {"backend": {"kind": SCRIPTED}, "scheme": "official", "prompts": str(kris_checkout(tmp_path / "code", file="ReasonEdit/prompts.py"))}
    bench = KrisBench(str(root), judge, categories=["temporal_prediction", "multi-element_composition", "chemistry"])
    bench.judge._backend = vlm = ScriptedVLM(default="{}")
    cases = bench.cases()
    bench.score([(c, [EditResult(c.source_image(), c.instructions[0])]) for c in cases])
    asked = dict(zip(vlm.questions, vlm.layouts))
    temporal = next(q for q in asked if q.startswith("\nMARK-prompt_consist_temporal"))
    assert temporal.index("Frame 1 (Generated):") < temporal.index("Frame 2 (Reference):") < temporal.index("Frame 4 (Reference):")
    assert asked[temporal] == "text" + ",text,image" * 4  # the prompt, then each frame after its label
    multi = next(q for q in asked if q.startswith("\nMARK-prompt_consist_multi"))
    assert "Reference Image 2:" in multi and asked[multi] == "text" + ",text,image" * 3
    dual = next(q for q in asked if "MARK-prompt_dual_evaluation" in q)
    assert "::Add a piece of solid sodium to the water::A large amount of heat" in dual  # instruct, then explanation
    assert dual.rstrip().endswith("This is the edited image:") and asked[dual] == "text,text,image,text,image"
    assert len(vlm.questions) == 3 * len(cases)


def test_kris_queries_for_viewpoint_and_anomaly_follow_the_scripts():
    prompts = {name: f"{name}|{{instruct}}|{{explanation}}" for name in ("prompt_abnormal_instruction_following", "prompt_dual_evaluation")}
    prompts |= {name: f"{name}|{{instruct}}" for name in ("prompt_consist", "prompt_view_instruction_following", "prompt_instruction_following")}
    prompts["prompt_quality"] = "prompt_quality {{literal}}"
    view = kris_queries(prompts, "viewpoint_change", {"ori_img": "1.jpg", "gt_img": "1-gt.jpg"}, "look from above")
    assert view["instruction"][1][-2:] == ["This is the ground truth image:", ("gt", 0)]
    anomaly = kris_queries(prompts, "anomaly_correction", {"ori_img": "1.jpg", "explain_en": "cats have four legs"}, "fix it")
    assert anomaly["instruction"][0] == "prompt_abnormal_instruction_following|fix it|cats have four legs"
    assert anomaly["quality"][0] == "prompt_quality {{literal}}"  # sent unformatted, as the scripts send it
    assert kris_queries(prompts, "count_change", {"ori_img": "1.jpg"}, "add one")["instruction"][0] == "prompt_instruction_following|add one"


def test_kris_parsing_keeps_the_authors_fallbacks():
    assert parse_kris_score('{"consistency_score": "4", "reasoning": "ok"}', "consistency_score") == 4
    assert parse_kris_score("Overall I give it 3 out of 5.", "quality_score") == 3
    assert parse_kris_score("2 hands look odd; quality score 4", "quality_score") == 4  # the colon is optional
    assert parse_kris_score("2 hands look odd; quality score 4", "quality_score", colon="[:：]") == 2  # required: the lone 2
    assert parse_kris_score("no numbers at all", "quality_score") is None
    assert parse_kris_dual('{"instruction_score": 2, "reasoning": "x"}') == (2, None)  # JSON read: no regex fallback
    assert parse_kris_dual('"instruction_score": 5, "knowledge_score": 4') == (None, None)  # quoted keys: the regexes miss
    assert parse_kris_dual("Instruction score: 5; Knowledge score: 4") == (5, 4)


def test_kris_summary_pools_scores_as_summarize_py():
    rows = [
        ("color_change", {"consistency": 100.0, "quality": 50.0, "instruction": 0.0, "knowledge": None}),
        ("biology", {"consistency": 100.0, "quality": 100.0, "instruction": 100.0, "knowledge": 0.0}),
        ("unknown_category", {"consistency": 0.0}),  # outside the seven groups: left out
    ]
    table = kris_summary(rows)
    assert table["Attribute Perception"] == {"VC": 100.0, "VQ": 50.0, "IF": 0.0, "AVG": 50.0}
    assert table["Natural Science"]["KP"] == 0.0 and table["Conceptual Knowledge"] == {"AVG": 75.0}
    assert table["Overall"] == pytest.approx(450 / 7) and "Procedural Knowledge" not in table


def test_kris_official_reads_only_the_checkout_and_names_what_is_missing(tmp_path):
    root = write_kris_folder(tmp_path / "k")
    backend = {"kind": SCRIPTED}
    with pytest.raises(InputError, match="utils/prompts.py"):
        KrisBench(str(root), {"backend": backend, "scheme": "official", "prompts": str(tmp_path / "empty")})
    lacking = kris_checkout(tmp_path / "partial", skip=("prompt_dual_evaluation",))
    with pytest.raises(InputError, match="prompt_dual_evaluation"):  # chemistry needs it
        KrisBench(str(root), {"backend": backend, "scheme": "official", "prompts": str(lacking)})
    # without chemistry the dual prompt is not needed; Temporal excluded as EditThinker reports
    bench = KrisBench(str(root), {"backend": backend, "scheme": "official", "prompts": str(lacking)}, exclude=["chemistry", "temporal_prediction"])
    assert "prompt_dual_evaluation" not in bench.official_prompts and "prompt_consist_temporal" not in bench.official_prompts
    assert bench.metrics[-1] == "knowledge" and bench.scale == (0.0, 100.0)


def test_mse_parsing_follows_parse_mixed_string():
    assert parse_mse('{"reason": "fine", "prompt_following": 9, "consistency": 7}') == (9, 7)
    assert parse_mse("{'reason': 'python literal', 'prompt_following': 7.5, 'consistency': 8}") == (7.5, 8)
    assert parse_mse('json{"reason": "x", "prompt_following": 3, "consistency": 10}') == (3, 10)  # "json" stripped as characters
    assert parse_mse('{"reason": "x", "prompt_following": "8", "consistency": 8}') is None  # a string score: asked again
    assert parse_mse("Here it is: {\"prompt_following\": 8, \"consistency\": 8}") is None  # prose around it: asked again
    assert parse_mse(None) is None


def sessions():
    """Three sessions from the vendored one: its turns in order, reversed, and rotated by one."""
    real = MSE_SLICE[0]
    out = []
    for index, order in enumerate([[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [1, 2, 3, 4, 0]]):
        out.append({**real, "index": index, **{k: [real[k][i] for i in order] for k in ("context", "operation", "description_target")}})
    return out


def test_mse_official_stops_at_the_first_failure_and_reports_the_scripts_table(tmp_path):
    data = sessions()
    key = lambda s, k: f"last turn {k} of {{'turn1': {data[s]['context'][0]!r}"  # noqa: E731  (str() of the turns dict)
    verdict = lambda pf, c: json.dumps({"reason": "checked", "prompt_following": pf, "consistency": c})  # noqa: E731
    answers = {
        key(0, 1): verdict(8, 9), key(0, 2): f"```json\n{verdict(7, 7)}\n```", key(0, 3): verdict(6, 9),  # 6 is not > 6: stop
        key(1, 1): verdict(10, 10), key(1, 2): ["prompt following 9, consistency 8", verdict(9, 8)],  # asked again once
        key(1, 3): verdict(8, 8), key(1, 4): verdict(8, 8), key(1, 5): verdict(8, 8),
        key(2, 1): "I will not give numbers",  # never readable: 20 tries, then no score
    }
    root = write_mse_folder(tmp_path / "MSE-Bench", data, copies=1)
    checkout = mse_checkout(tmp_path / "VINCIE")
    bench = {"kind": "mse-bench", "root": str(root)}
    run = run_compare(config(tmp_path, bench, answers, model="gpt-5-nano", scheme="official", prompts=str(checkout), temperature=0.7))
    rows = {r.case_id: r for r in run.rows}
    assert rows["0"].scores == {"overall": 40.0, "pf": pytest.approx(70.0), "cc": pytest.approx(250 / 3)}
    assert [t["overall"] for t in rows["0"].turn_scores] == [100.0, 100.0, 0.0, 0.0, 0.0]
    assert len(rows["0"].details["answers"]) == 3  # turns 4 and 5 are never asked
    assert rows["1"].scores == {"overall": 100.0, "pf": pytest.approx(86.0), "cc": pytest.approx(84.0)}
    assert len(rows["1"].details["answers"]) == 6
    assert rows["2"].scores["overall"] is None and len(rows["2"].details["answers"]) == 20
    protocol = json.loads((run.out_dir / "summary.json").read_text())["judge_protocol"]
    assert protocol["label"] == "official-prompts (temperature 0.7, not the pinned 1)"
    table = protocol["official_summary"]["base"]
    assert table["sessions"] == 2 and table["unscored"] == 1
    assert table["turns"]["turn1"] == pytest.approx({"success_rate": 1.0, "prompt_following": 9.0, "consistency": 9.5, "overall": (math.sqrt(72) + 10) / 2})
    assert table["turns"]["turn3"] == pytest.approx({"success_rate": 0.5, "prompt_following": 7.0, "consistency": 8.5, "overall": (math.sqrt(54) + 8) / 2})
    assert table["turns"]["turn5"] == pytest.approx({"success_rate": 0.5, "prompt_following": 4.0, "consistency": 4.0, "overall": 4.0})


def test_mse_official_question_and_images_as_compute_score_sends_them(tmp_path):
    from refine.compare.benchmarks.mse import MSEBench
    from refine.testing.scripted_vlm import ScriptedVLM
    from refine.types import EditResult

    template = mse_checkout(tmp_path / "VINCIE")
    bench = MSEBench(str(write_mse_folder(tmp_path / "m", copies=1)), {"backend": {"kind": SCRIPTED}, "scheme": "official", "prompts": str(template)})
    bench.judge._backend = vlm = ScriptedVLM(default='{"prompt_following": 9, "consistency": 9}')  # every turn passes
    case = bench.cases()[0]
    [score] = bench.score([(case, [EditResult(case.source_image(), text) for text in case.instructions])])
    assert score.scores["overall"] == 100.0 and vlm.layouts == ["text" + ",image" * (k + 2) for k in range(5)]
    assert vlm.questions[1].startswith(f"MSE-JUDGE 3 images; last turn 2 of {{'turn1': {case.instructions[0]!r}, 'turn2':")
    assert vlm.questions[1] == mse_question(bench.official_prompts["prompt_template"], case.instructions[:2])
    assert vlm.questions[0].rstrip().endswith('Return {"reason": "...", "prompt_following": int, "consistency": int}')


@pytest.mark.slow(minutes=1)
@pytest.mark.parametrize("kind", ["kris", "mse-bench"])
def test_official_schemes_run_through_compare_with_the_tiny_judge(tmp_path, kind):
    from refine.testing.tiny_vlm import tiny_vlm_dir

    if kind == "kris":
        root, checkout = write_kris_folder(tmp_path / "k"), kris_checkout(tmp_path / "code")
        bench = {"kind": "kris", "root": str(root), "categories": ["chemistry", "multi-element_composition"]}
    else:
        root, checkout = write_mse_folder(tmp_path / "m", copies=2), mse_checkout(tmp_path / "VINCIE")
        bench = {"kind": "mse-bench", "root": str(root)}
    judge = {"backend": {"kind": "transformers", "model": str(tiny_vlm_dir("qwen2_5_vl"))}, "max_new_tokens": 8,
             "scheme": "official", "prompts": str(checkout), "mode": "sample"}
    run = run_compare({
        "benchmark": {**bench, "judge": judge}, "editor": {"kind": "refine.testing.compare_fakes:paint_editor"},
        "entries": {"base": {}}, "out_dir": str(tmp_path / "out"), "progress": False, "bootstrap": 200,
    })
    assert len(run.rows) == (3 if kind == "kris" else 2)
    assert all(r.details["answers"] for r in run.rows)  # the tiny judge's answers are kept, parsed or not
    protocol = json.loads((run.out_dir / "summary.json").read_text())["judge_protocol"]
    assert protocol["label"].startswith("official-prompts (judge ") and protocol["official_summary"]["base"] is not None
