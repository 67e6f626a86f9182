import json
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from refine.compare import run_compare
from refine.testing.compare_fakes import COLOURS, PaintEditor

QUIET = Console(file=open("/dev/null", "w"))


def _results(run) -> list[dict]:
    """The per-case rows without timings (the only thing allowed to differ between equivalent runs)."""
    rows = [row.to_json() for row in run.rows]
    for row, case_row in zip(rows, run.rows):
        row.pop("seconds")
        for turn in row["turns"]:
            turn.pop("seconds")
        row["pixels"] = [Image.open(p).tobytes() for p in case_row.turn_images]
    return rows


def _summary(run) -> list[dict]:
    rows = [row.to_json() for row in run.summary]
    for row in rows:
        row.pop("seconds_per_case")
    return rows


def test_run_writes_every_report_file_with_one_row_per_entry_and_category(toy):
    run = run_compare(toy(cases=8), console=QUIET)
    out = run.out_dir
    for name in ("cases.jsonl", "summary.md", "summary.csv", "summary.json", "report.html", "config.yaml",
                 "charts/overall.png", "charts/categories.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 8 and {r["entry"] for r in rows} == {"base", "+spell"}
    assert all((out / r["image"]).is_file() for r in rows)
    spelled = [r for r in rows if r["entry"] == "+spell" and "colour of" in r["instruction"]]
    assert spelled and all("colour of" not in r["instruction_used"] for r in spelled)  # the rewrite is recorded
    assert spelled[0]["turns"][0]["steps"][0]["kind"] == "think"
    assert all(set(r) >= {"scores", "instruction", "instruction_used", "turns", "seconds", "image"} for r in rows)

    categories = {"red", "green", "blue", "yellow"}
    expected = {(e, c) for e in ("base", "+spell") for c in categories | {"all"}}
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert {(r["entry"], r["category"]) for r in summary} == expected and len(summary) == len(expected)
    csv_lines = (out / "summary.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + len(expected)
    md_rows = [line for line in (out / "summary.md").read_text().splitlines() if line.startswith("| base") or line.startswith("| +spell")]
    assert len(md_rows) == len(expected)

    spell_all = next(r for r in summary if r["entry"] == "+spell" and r["category"] == "all")
    assert spell_all["delta"]["vs"] == "base" and spell_all["delta"]["mean"] == pytest.approx(0.5)
    assert spell_all["delta"]["low"] > 0  # the paired difference resolves the gap
    overall = {r.entry: r.metrics["overall"] for r in run.summary if r.category == "all"}
    assert overall["base"].mean == pytest.approx(0.5) and overall["+spell"].mean == pytest.approx(1.0)
    assert overall["base"].low < 0.5 < overall["base"].high


def test_interrupted_run_resumes_without_redoing_finished_cases_and_matches(toy):
    reference = run_compare(toy("reference", cases=8), console=QUIET, write_report=False)
    calls_for_full_run = PaintEditor.calls  # 2 entries x ceil(8 / 3) batches = 6

    PaintEditor.calls, PaintEditor.interrupt_after = 0, 4  # dies in the middle of the second entry
    config = toy("interrupted", cases=8)
    with pytest.raises(KeyboardInterrupt):
        run_compare(config, console=QUIET)
    assert not (Path(config["out_dir"]) / "report.html").exists()
    finished = list(Path(config["out_dir"]).glob("cache/*/*/*/s0/edit.json"))
    assert len(finished) == 8 + 3  # the first entry and one batch of the second

    PaintEditor.calls, PaintEditor.interrupt_after = 0, None
    resumed = run_compare(config, console=QUIET, write_report=False)
    assert resumed.edited == {"base": 0, "+spell": 8 - 3}  # only the cases that were not finished
    assert PaintEditor.calls == calls_for_full_run - 4
    assert _results(resumed) == _results(reference)
    assert _summary(resumed) == _summary(reference)


def test_adding_an_entry_reruns_only_it_and_renaming_reuses_the_cache(toy):
    first = run_compare(toy(cases=6, entries={"base": {}}), console=QUIET, write_report=False)
    assert first.edited == {"base": 6}
    here = "refine.testing.compare_fakes"
    entries = {"baseline": {}, "+spell": {"refiners": [{"kind": f"{here}:SpellOut"}]}}
    second = run_compare(toy(cases=6, entries=entries), console=QUIET, write_report=False)
    assert second.edited == {"baseline": 0, "+spell": 6}  # same spec under a new name: cached
    assert second.scored == {"baseline": 0, "+spell": 6}
    entries["+spell"]["refiners"][0]["prefix"] = "please "  # a changed spec is a new entry
    third = run_compare(toy(cases=6, entries=entries), console=QUIET, write_report=False)
    assert third.edited == {"baseline": 0, "+spell": 6}


def test_changing_the_judge_rescores_without_re_editing(toy):
    config = toy(cases=4)
    run_compare(config, console=QUIET, write_report=False)
    config["benchmark"]["version"] = 2
    again = run_compare(config, console=QUIET, write_report=False)
    assert again.edited == {"base": 0, "+spell": 0} and again.scored == {"base": 4, "+spell": 4}


def test_seeds_multiply_rows_and_limit_takes_categories_in_turn(toy):
    run = run_compare(toy(cases=16, limit=4, seeds=[0, 1]), console=QUIET, write_report=False)
    assert {c.category for c in run.cases} == {"red", "green", "blue", "yellow"}
    assert len(run.rows) == 2 * 4 * 2 and {r.seed for r in run.rows} == {0, 1}


def test_multi_turn_cases_feed_each_output_to_the_next_turn(toy):
    run = run_compare(toy(cases=4, turns=2), console=QUIET, write_report=False)
    rows = [row.to_json() for row in run.rows]
    assert all(len(r["turns"]) == 2 and len(r["turn_scores"]) == 2 for r in rows)
    assert all(len(row.turn_images) == 2 and all(p.is_file() for p in row.turn_images) for row in run.rows)
    spell = [r for r in rows if r["entry"] == "+spell"]
    assert all(r["scores"]["overall"] == 1.0 for r in spell)
    # turn 2 starts from turn 1's output: its input square has the first asked colour
    wanted_first = {c.id: COLOURS[c.meta["wanted"][0]] for c in run.cases}
    second_turn_inputs = [(case_id, colour) for case_id, turn, colour in PaintEditor.seen if turn == 1]
    assert len(second_turn_inputs) == 2 * 4  # two entries, four cases
    spelled = second_turn_inputs[4:]  # the +spell entry paints every turn
    assert all(colour == wanted_first[case_id] for case_id, colour in spelled)


@pytest.mark.parametrize("damage", ["truncated-png", "empty-png", "garbled-edit-json", "garbled-score"])
def test_a_damaged_cache_file_is_recomputed_and_the_rerun_succeeds(damage, toy):
    config = toy(cases=4, entries={"base": {}})
    first = run_compare(config, console=QUIET, write_report=False)
    assert first.edited == {"base": 4} and first.scored == {"base": 4}
    case_dir = sorted(Path(config["out_dir"]).glob("cache/*/*/*/s0"))[1]
    png, record, score = case_dir / "turn0.png", case_dir / "edit.json", next(case_dir.glob("score-*.json"))
    if damage == "truncated-png":
        png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    elif damage == "empty-png":
        png.write_bytes(b"")
    elif damage == "garbled-edit-json":
        record.write_text(record.read_text()[:10])
    else:
        score.write_text("{\"scores\": ")

    rerun = run_compare(config, console=QUIET)
    edited_again = 0 if damage == "garbled-score" else 1
    assert rerun.edited == {"base": edited_again} and rerun.scored == {"base": 1}  # only the damaged case
    assert _results(rerun) == _results(first)
    Image.open(png).load()  # rewritten whole
