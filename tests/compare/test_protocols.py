"""Judge schemes: official protocols (authors' prompts from a checkout, their parsing and aggregation) vs refine-judge.

The "checkouts" here are written by the tests in the official file layouts with our own prompt
texts under the official names (the authors' wording is theirs and is not vendored); what is
checked is that refine finds, reads, assembles, parses and aggregates them as the official
scripts do, on hand-computed tables.
"""

import json
import math
from pathlib import Path

import pytest

from refine.compare import run_compare
from refine.compare.benchmarks.gedit import GEditBench
from refine.compare.benchmarks.imgedit import ImgEditBench
from refine.compare.benchmarks.kris import KrisBench
from refine.compare.stats import ALL
from refine.errors import ConfigError, InputError
from refine.testing.benchmark_folders import write_gedit_folder, write_imgedit_folder, write_kris_folder, write_rise_folder

SCRIPTED = "refine.testing.scripted_vlm:ScriptedVLM"
PQ_MARK = "RATE-NATURALNESS-AND-ARTIFACTS"


def viescore_checkout(root):
    """A VIEScore checkout: viescore/vie_prompts.py with the four constants GEdit-Bench's scorer assembles."""
    path = root / "viescore" / "vie_prompts.py"
    path.parent.mkdir(parents=True)
    path.write_text(
        '_context_no_delimit = """CONTEXT: answer as {"score": [...], "reasoning": "..."}"""\n'
        '_prompts_0shot_two_image_edit_rule = """RULE: first image original, second edited."""\n'
        '_prompts_0shot_tie_rule_SC = """Rate success and overediting 0-10.\\nEditing instruction: <instruction>\\n"""\n'
        f'_prompts_0shot_rule_PQ = """{PQ_MARK} 0-10."""\n'
        "import os  # never executed: the constants are read with ast\n"
    )
    return root


def config(tmp_path, benchmark, answers, *, model="gpt-4.1", default="I cannot tell", **judge):
    backend = {"kind": SCRIPTED, "answers": answers, "default": default, "model": model}
    return {
        "benchmark": {**benchmark, "judge": {"backend": backend, "mode": "sample", **judge}},
        "editor": {"kind": "refine.testing.compare_fakes:paint_editor"},
        "entries": {"base": {}}, "out_dir": str(tmp_path / "out"), "progress": False, "bootstrap": 200,
    }


def all_row(run):
    return next(r for r in run.summary if r.entry == "base" and r.category == ALL)


def test_gedit_official_viescore_matches_the_hand_computed_table(tmp_path):
    root = write_gedit_folder(tmp_path / "GEdit-Bench", cases=5)  # color_alter twice, then 3 other types
    sc = {  # case: instruction -> VIEScore SC answer [success, overediting]
        "make the square green": '{"score" : [9, 4], "reasoning": "ok"}',   # color_alter: SC 4
        "make the square blue": '{"score" : [10, 10], "reasoning": "ok"}',  # subject-add: SC 10
        "make the square yellow": '{"score": [2, 8]}',                       # background_change: SC 2
        "make the square purple": "I refuse to score",                       # style_change: unparseable -> no score
        "make the square red": '{"score": [6, 6]}',                          # color_alter: SC 6
    }
    answers = {**sc, PQ_MARK: '{"score": [8, 6]}'}  # PQ = min(8, 6) = 6 for every case
    checkout = viescore_checkout(tmp_path / "VIEScore")
    run = run_compare(config(tmp_path, {"kind": "gedit", "root": str(root)}, answers, scheme="official", prompts=str(checkout)))
    o = {4: math.sqrt(4 * 6), 10: math.sqrt(10 * 6), 2: math.sqrt(2 * 6), 6: math.sqrt(6 * 6)}
    rows = {r.case_id: r.scores for r in run.rows}
    by_instruction = {c.instructions[0]: rows[c.id] for c in run.cases}
    assert by_instruction["make the square green"] == {"overall": pytest.approx(o[4]), "semantics": 4.0, "quality": 6.0}
    assert by_instruction["make the square purple"]["overall"] is None  # never a guess
    # per task type, then over types (style_change has no score and drops out): not the mean over cases
    expected = ((o[4] + o[6]) / 2 + o[10] + o[2]) / 3
    assert all_row(run).metrics["overall"].mean == pytest.approx(expected)
    assert expected != pytest.approx((o[4] + o[6] + o[10] + o[2]) / 4)
    summary = json.loads((run.out_dir / "summary.json").read_text())
    assert summary["judge_protocol"]["label"] == "official"
    assert "gedit [official]" in (run.out_dir / "summary.md").read_text()


def test_gedit_official_asks_viescore_assembled_questions_with_the_right_images(tmp_path):
    from refine.testing.scripted_vlm import ScriptedVLM

    root = write_gedit_folder(tmp_path / "g", cases=1)
    judge = {"backend": {"kind": SCRIPTED}, "scheme": "official", "prompts": str(viescore_checkout(tmp_path / "v"))}
    bench = GEditBench(str(root), judge)
    bench.judge._backend = vlm = ScriptedVLM(answers={"Editing instruction": '"score": [5, 5]', PQ_MARK: '"score": [5, 5]'})
    case = bench.cases()[0]
    from refine.types import EditResult

    [score] = bench.score([(case, [EditResult(case.source_image(), case.instructions[0])])])
    sc_question, pq_question = vlm.questions
    assert sc_question.startswith("CONTEXT") and "RULE: first image" in sc_question
    assert sc_question.rstrip().endswith(f"Editing instruction: {case.instructions[0]}")
    assert PQ_MARK in pq_question and case.instructions[0] not in pq_question
    assert score.scores["overall"] == pytest.approx(5.0)


def test_imgedit_official_prompts_parse_and_round_as_its_step_scripts(tmp_path):
    root = write_imgedit_folder(tmp_path / "Benchmark", cases=5)  # add, remove, adjust, style, add
    checkout = tmp_path / "ImgEdit"
    (checkout / "Benchmark" / "Basic").mkdir(parents=True)
    prompts = {t: f"PROMPT-{t}: grade this {t} edit of <edit_prompt>" for t in ("add", "remove", "adjust", "style")}
    (checkout / "Benchmark" / "Basic" / "prompts.json").write_text(json.dumps(prompts))
    answers = {
        "PROMPT-add: grade this add edit of Change the square to green.": "Brief reasoning: ok.\nPrompt Compliance: 4\nVisual Seamlessness: 5\nPhysical & Detail Fidelity: 4",
        "PROMPT-remove": "Brief reasoning: none.\nPrompt Compliance: 1\nVisual Seamlessness: 2\nPhysical & Detail Fidelity: 2",
        "PROMPT-adjust": "no scores at all",
        "PROMPT-style": "Style Fidelity: 5\nContent Preservation: 3\nRendering Quality: 4",
        "PROMPT-add: grade this add edit of Change the square to red.": "Prompt Compliance: 2\nVisual Seamlessness: 2\nPhysical & Detail Fidelity: 3",
    }
    run = run_compare(config(tmp_path, {"kind": "imgedit", "root": str(root)}, answers, scheme="official", prompts=str(checkout), repeats=3))
    rows = {r.case_id: r.scores for r in run.rows}  # the scripted judge repeats its answers: repeats change nothing here
    assert rows["100"]["overall"] == round(13 / 3, 2) == 4.33  # step1: mean of the "Name: n" lines, 2 decimals
    assert rows["102"]["overall"] is None
    assert rows["103"]["overall"] == 4.0 and rows["103"]["compliance"] == 5.0  # style's three criteria, in order
    # step2: per edit type, then (ImgEdit's overall) over types; adjust has no score
    expected = ((4.33 + round(7 / 3, 2)) / 2 + round(5 / 3, 2) + 4.0) / 3
    assert all_row(run).metrics["overall"].mean == pytest.approx(expected)
    assert json.loads((run.out_dir / "summary.json").read_text())["judge_protocol"]["label"] == "official"


def test_judge_repeats_average_per_case_and_report_the_spread_over_repeats(tmp_path):
    root = write_imgedit_folder(tmp_path / "Benchmark", cases=2)  # add, remove
    checkout = tmp_path / "prompts.json"
    checkout.write_text(json.dumps({t: f"PROMPT-{t} <edit_prompt>" for t in ("add", "remove")}))
    answers = {
        "PROMPT-add": ["A: 5\nB: 5\nC: 5", "A: 3\nB: 3\nC: 3", "A: 4\nB: 4\nC: 4"],
        "PROMPT-remove": ["A: 1\nB: 1\nC: 1", "A: 1\nB: 1\nC: 1", "A: 4\nB: 4\nC: 4"],
    }
    run = run_compare(config(tmp_path, {"kind": "imgedit", "root": str(root)}, answers, scheme="official", prompts=str(checkout), repeats=3))
    rows = {r.case_id: r for r in run.rows}
    assert rows["100"].scores["overall"] == pytest.approx(4.0) and rows["101"].scores["overall"] == pytest.approx(2.0)
    assert [r["overall"] for r in rows["100"].details["repeats"]] == [5.0, 3.0, 4.0]
    spread = json.loads((run.out_dir / "summary.json").read_text())["judge_protocol"]["repeat_interval"]["base"]
    assert spread["values"] == [3.0, 2.0, 4.0]  # per repeat: mean of the two type means
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n); sd of (3, 2, 4) is 1
    assert spread["low"] == pytest.approx(3.0 - half) and spread["high"] == pytest.approx(3.0 + half)
    assert "- base: 3 [" in (run.out_dir / "summary.md").read_text()


def test_labels_say_when_the_judge_is_not_the_pinned_one(tmp_path):
    root = write_gedit_folder(tmp_path / "g", cases=1)
    checkout = str(viescore_checkout(tmp_path / "v"))
    label = lambda **judge: GEditBench(str(root), {"backend": {"kind": SCRIPTED, "model": judge.pop("model", "gpt-4.1")}, **judge}).protocol_label  # noqa: E731
    assert label(scheme="official", prompts=checkout) == "official"
    assert label(scheme="official", prompts=checkout, model="Qwen2.5-VL-72B") == "official-prompts (judge Qwen2.5-VL-72B, not the pinned gpt-4.1)"
    assert label(scheme="official", prompts=checkout, temperature=0.7).startswith("official-prompts (temperature 0.7")
    assert label() == "refine-judge"  # our prompts never carry the official name, whatever the model
    imgedit = write_imgedit_folder(tmp_path / "i", cases=1)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"add": "<edit_prompt>"}))
    pinned = {"backend": {"kind": SCRIPTED, "model": "gpt-4.1"}, "scheme": "official", "prompts": str(prompts)}
    assert ImgEditBench(str(imgedit), {**pinned, "repeats": 3}).protocol_label == "official"
    assert ImgEditBench(str(imgedit), pinned).protocol_label == "official-prompts (1 judge repeat(s), fewer than the pinned 3)"


def test_official_schemes_refuse_what_they_cannot_honour(tmp_path):
    gedit = write_gedit_folder(tmp_path / "g", cases=1)
    kris = write_kris_folder(tmp_path / "k")
    backend = {"kind": SCRIPTED}
    with pytest.raises(ConfigError, match="needs prompts"):
        GEditBench(str(gedit), {"backend": backend, "scheme": "official"})
    with pytest.raises(ConfigError, match="only with scheme: official"):
        GEditBench(str(gedit), {"backend": backend, "prompts": str(tmp_path)})
    with pytest.raises(InputError, match="utils/prompts.py"):  # KRIS-Bench's prompts are read from its checkout
        KrisBench(str(kris), {"backend": backend, "scheme": "official", "prompts": str(tmp_path / "no-checkout")})
    with pytest.raises(InputError, match="lacks the string constant"):
        (tmp_path / "rise").mkdir()
        (tmp_path / "rise" / "utils.py").write_text('prompt_consist = "x"\n')
        from refine.compare.benchmarks.rise import RiseBench

        RiseBench(str(write_rise_folder(tmp_path / "r")), {"backend": backend, "scheme": "official", "prompts": str(tmp_path / "rise")})
    with pytest.raises(InputError, match="vie_prompts.py"):
        GEditBench(str(gedit), {"backend": backend, "scheme": "official", "prompts": str(tmp_path / "empty")})
    (tmp_path / "bad.json").write_text(json.dumps({"add": "x"}))
    with pytest.raises(InputError, match="no prompt for edit_type"):
        ImgEditBench(str(write_imgedit_folder(tmp_path / "i", cases=2)), {"backend": backend, "scheme": "official", "prompts": str(tmp_path / "bad.json")})


def test_kris_exclude_drops_temporal_as_editthinker_reports(tmp_path):
    root = write_kris_folder(tmp_path / "k")
    judge = {"backend": {"kind": SCRIPTED}}
    every = {c.category for c in KrisBench(str(root), judge).cases()}
    kept = {c.category for c in KrisBench(str(root), judge, exclude=["temporal_prediction"]).cases()}
    assert "temporal_prediction" in every and kept == every - {"temporal_prediction"}
    with pytest.raises(InputError, match="exclude names temporal"):
        KrisBench(str(root), judge, exclude=["temporal"])


@pytest.mark.slow(minutes=1)
@pytest.mark.parametrize("scheme", ["refine-judge", "official"])
def test_a_compare_run_with_the_tiny_judge_through_each_scheme(tmp_path, scheme):
    from refine.testing.tiny_vlm import tiny_vlm_dir

    root = write_gedit_folder(tmp_path / "GEdit-Bench", cases=2)
    judge = {"backend": {"kind": "transformers", "model": str(tiny_vlm_dir("qwen2_5_vl"))}, "max_new_tokens": 8}
    if scheme == "official":
        judge.update(scheme="official", prompts=str(viescore_checkout(tmp_path / "VIEScore")), mode="sample")
    run = run_compare({
        "benchmark": {"kind": "gedit", "root": str(root), "judge": judge},
        "editor": {"kind": "refine.testing.compare_fakes:paint_editor"},
        "entries": {"base": {}}, "out_dir": str(tmp_path / "out"), "progress": False, "bootstrap": 200,
    })
    assert len(run.rows) == 2
    protocol = json.loads((run.out_dir / "summary.json").read_text())["judge_protocol"]
    if scheme == "official":  # a random tiny VLM writes no parseable VIEScore answer: no score, and the answers are kept
        assert protocol["label"].startswith("official-prompts (judge ") and all(r.scores["overall"] is None for r in run.rows)
        assert all(set(r.details["answers"]) == {"sc", "pq"} for r in run.rows)
    else:
        assert protocol["label"] == "refine-judge" and all(0 <= r.scores["overall"] <= 10 for r in run.rows)


def test_rewrite_flag_edits_from_the_mllm_instruction_and_judges_the_original(tmp_path):
    root = write_kris_folder(tmp_path / "k")
    rewrite = {"backend": {"kind": SCRIPTED, "answers": {"solid sodium": "Show flames and fizzing where the sodium meets the water."}}}
    judge = {"backend": {"kind": SCRIPTED}, "mode": "sample"}
    plain = KrisBench(str(root), judge, categories=["chemistry"])
    rewritten = KrisBench(str(root), judge, categories=["chemistry"], rewrite=rewrite)
    assert plain.key != rewritten.key  # cached edits of one protocol are never reused for the other
    case = rewritten.cases()[0]
    request = rewritten.request(case, 0, case.source_image(), seed=0)
    assert request.instruction == "Show flames and fizzing where the sodium meets the water."
    assert request.meta["original_instruction"] == case.instructions[0] == "Add a piece of solid sodium to the water"
    other = rewritten.cases()[1]  # the scripted MLLM gives no answer for it: the instruction is kept
    assert rewritten.request(other, 0, other.source_image(), seed=0).instruction == other.instructions[0]
    run = run_compare({
        "benchmark": {"kind": "kris", "root": str(root), "judge": judge, "categories": ["chemistry"], "rewrite": rewrite},
        "editor": {"kind": "refine.testing.compare_fakes:paint_editor"},
        "entries": {"base": {}}, "out_dir": str(tmp_path / "out"), "progress": False, "bootstrap": 200,
    })
    edited = {r.case_id: r.turns[0]["instruction"] for r in run.rows}
    assert edited["chemistry/1"] == "Show flames and fizzing where the sodium meets the water."


def rise_checkout(root):
    """A RISEBench checkout's utils.py: the prompt_* constants gpt_eval.py uses, our texts with a marker each."""
    texts = {
        "prompt_consist": "CONSIST::{instruct}", "prompt_reasoning": "REASON-TXT::{instruct}::{reference}",
        "prompt_reasoning_w_input": "REASON-IN::{instruct}::{reference}", "prompt_generation": "GENERATION",
        "prompt_spatial_ref": "SPATIAL-REF::{instruct}::{reference}", "prompt_spatial_ref_img": "SPATIAL-IMG::{instruct}",
        "prompt_spatial_ref_w_input": "SPATIAL-IN::{instruct}::{reference}", "prompt_spatial_cons": "SPATIAL-CONS::{instruct}",
        "prompt_spatial_qual": "SPATIAL-QUAL", "prompt_logical_cons_ans": "LOGIC-CONS-ANS::{instruct}::{reference}",
        "prompt_logical_txt": "LOGIC-TXT::{instruct}::{reference}", "prompt_logical_cons": "LOGIC-CONS::{instruct}",
        "prompt_logical_img": "LOGIC-IMG::{instruct}", "prompt_logical_img_wo_q": "LOGIC-IMG-WO-Q",
    }
    root.mkdir(parents=True)
    (root / "utils.py").write_text("import numpy as np\n\n" + "".join(f'{k} = """{v}"""\n\n' for k, v in texts.items()))
    return root


def test_rise_official_prompts_parsing_and_accuracy_match_the_hand_computed_table(tmp_path):
    from refine.compare.benchmarks.rise import RiseBench
    from refine.testing.scripted_vlm import ScriptedVLM
    from refine.types import EditResult

    items = json.loads((Path(__file__).parent / "data" / "rise" / "data_total.json").read_text())  # temporal, causal, spatial, logical x2
    root = write_rise_folder(tmp_path / "RISEBench", items)
    final = lambda n: f"The edit ... \n**Final Score:** **{n}**"  # noqa: E731
    answers = {
        "CONSIST::Draw what it will look like after being kept": final(5), "REASON-TXT::Draw what it will look like after being kept": final(5),
        "CONSIST::Draw what it will look like after being bitten": final(5), "REASON-TXT::Draw what it will look like after being bitten": final(4),
        "GENERATION": final(5),
        "SPATIAL-REF::Draw the top view.": final(5), "SPATIAL-CONS::Draw the top view.": final(5), "SPATIAL-QUAL": final(3),
        "LOGIC-CONS::This is an image of a maze": "Final Score: 1", "LOGIC-IMG::This is an image of a maze": "Final Score: 1",
        "LOGIC-CONS-ANS::In the current graph": "Final Score: 1", "LOGIC-TXT::In the current graph": "I cannot decide",
    }
    bench = RiseBench(str(root), {"backend": {"kind": SCRIPTED}, "scheme": "official", "prompts": str(rise_checkout(tmp_path / "rise-code"))})
    bench.judge._backend = vlm = ScriptedVLM(answers=answers, default="no answer")
    cases = bench.cases()
    scores = {c.id: s for c, s in zip(cases, bench.score([(c, [EditResult(c.source_image(), c.instructions[0])]) for c in cases]))}
    assert [scores[c.id].scores["overall"] for c in cases] == [100.0, 0.0, 0.0, 100.0, 0.0]  # accuracy: complete at all-5
    assert scores["causal_reasoning_1"].scores["reasoning"] == 75.0 and scores["causal_reasoning_1"].details["official"]["score"] == 4.5
    assert scores["logical_reasoning_1"].details["official"]["consistency"] == 5  # logical answers 0/1, mapped to 1/5
    assert scores["logical_reasoning_2"].details["official"] is None and scores["logical_reasoning_2"].scores["reasoning"] is None
    assert "no answer" not in [answer for s in scores.values() for answer in s.details["answers"].values()]  # every question was scripted
    layouts = dict(zip(vlm.questions, vlm.layouts))
    assert layouts[next(q for q in layouts if q.startswith("LOGIC-IMG::"))] == "text,image,image"  # reference image, then the edit
    assert layouts[next(q for q in layouts if q.startswith("REASON-TXT::"))] == "text,image"  # text reference: the edit alone
    assert len(vlm.questions) == 3 + 3 + 3 + 2 + 2  # logical cases have no quality question
