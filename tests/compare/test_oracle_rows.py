"""Honest rows: entries that read ground truth are labelled oracles and reported apart, everywhere."""

import csv
import io
import json

import pytest
from rich.console import Console

from refine.compare import run_compare
from refine.compare.charts import _grouped_bars
from refine.compare.config import CompareConfig
from refine.compare.entries import plan_entries
from refine.compare.runner import load_compare_config
from refine.compare.stats import MeanCI, SummaryRow
from refine.registry import registry

FAKES = "refine.testing.compare_fakes"
ORACLE_ENTRIES = {
    "base": {},
    "+spell": {"refiners": [{"kind": f"{FAKES}:SpellOut"}]},
    "+peek": {"refiners": [{"kind": f"{FAKES}:PeekAnswer"}]},
    "+best": {"refiners": [{"kind": "best_of_k", "reward": {"kind": f"{FAKES}:SquareReward"}, "k": 2}]},
}


def _oracles(toy_cfg) -> dict[str, bool]:
    return {e.name: e.oracle for e in plan_entries(CompareConfig(**toy_cfg))[0]}


def test_entries_are_oracles_exactly_when_a_component_reads_ground_truth(toy):
    assert _oracles(toy(entries=ORACLE_ENTRIES)) == {"base": False, "+spell": False, "+peek": True, "+best": True}


@pytest.mark.parametrize(
    "refiner, oracle",
    [
        ({"kind": "thinker", "thinker": "expert", "max_turns": 3}, True),
        ({"kind": "thinker", "thinker": "expert", "max_turns": 3, "select": "last"}, True),
        ({"kind": "thinker", "thinker": "vlm:http://127.0.0.1:9/v1#m"}, False),
        ({"kind": "best_of_k", "reward": "shapes_overall", "k": 2}, True),
        ({"kind": "best_of_k", "reward": {"kind": "composite", "rewards": ["consistency", "shapes_cc"]}}, True),
        ({"kind": "best_of_k", "reward": "consistency", "k": 2}, False),
    ],
)
def test_thinker_and_best_of_k_are_oracles_through_what_they_wrap(toy, refiner, oracle):
    assert _oracles(toy(entries={"e": {"refiners": [refiner]}})) == {"e": oracle}


def test_an_entry_can_be_marked_oracle_by_hand_but_not_unmarked(toy):
    entries = {"judge-picked": {"refiners": [{"kind": f"{FAKES}:SpellOut"}], "oracle": True},
               "+peek": {"refiners": [{"kind": f"{FAKES}:PeekAnswer"}], "oracle": False}}
    assert _oracles(toy(entries=entries)) == {"judge-picked": True, "+peek": True}


def test_the_default_shapes_config_labels_its_upper_bounds_and_its_thinker_is_the_learned_loop():
    cfg = load_compare_config(None)
    entries, _ = plan_entries(cfg)
    oracles = {e.name for e in entries if e.oracle}
    assert {"+thinker.expert", "+thinker.expert.last", "+best_of_2.oracle"} <= oracles
    assert not oracles & {"base", "+edit_r1", "+inline_critic", "+thinker", "+thinker.last", "+best_of_2", "+edit_r1+thinker"}
    last = registry.build("refiner", cfg.entries["+thinker.expert.last"].refiners[0])
    assert last.config.select == "last" and last.thinker.name == "shape-expert"
    best = registry.build("refiner", cfg.entries["+best_of_2.oracle"].refiners[0])
    assert best.k == 2 and best.reward.name == "shapes_overall"
    # the learned loop (the bundled models, loaded): think-while-edit, its score from the VLM judge, up to 3 edits
    learned = registry.build("refiner", cfg.entries["+thinker"].refiners[0])
    assert learned.thinker.name.startswith("judged:vlm:") and learned.thinker.name.endswith("shapes-thinker-find")
    assert not learned.config.think_before_edit and learned.config.max_turns == 3 and learned.config.select == "best"
    assert learned.thinker.judge.mode == "score_logit_cot" and learned.thinker.judge_against == "rewrite"
    # its companions: the same thinker (one model load, shared scores), select last, and best-of-k by its score
    learned_last = registry.build("refiner", cfg.entries["+thinker.last"].refiners[0])
    assert learned_last.config.select == "last" and learned_last.thinker is learned.thinker
    control = registry.build("refiner", cfg.entries["+best_of_2"].refiners[0])
    assert control.k == 2 and control.reward.thinker is learned.thinker
    assert cfg.entries["+edit_r1+thinker"].refiners[1] == cfg.entries["+thinker"].refiners[0]


@pytest.fixture
def report(toy):
    console = Console(file=io.StringIO(), width=250)
    run = run_compare(toy(cases=8, entries=ORACLE_ENTRIES), console=console)
    return run, console.file.getvalue()


def test_every_table_holds_the_oracle_rows_in_an_upper_bounds_block_and_only_there(report):
    run, printed = report
    out = run.out_dir
    summary = json.loads((out / "summary.json").read_text())
    assert summary["upper_bounds"] == ["+peek", "+best"]
    assert {r["entry"] for r in summary["summary"] if r["oracle"]} == {"+peek", "+best"}

    main, upper = (out / "summary.md").read_text().split("## Upper bounds")
    assert {line.split(" | ")[0][2:] for line in main.splitlines() if line.startswith("| ") and " | all |" in line} == {"base", "+spell"}
    assert {line.split(" | ")[0][2:] for line in upper.splitlines() if line.startswith("| ") and " | all |" in line} == {"+peek", "+best"}

    rows = list(csv.DictReader(io.StringIO((out / "summary.csv").read_text())))
    assert {r["entry"] for r in rows if r["oracle"] == "true"} == {"+peek", "+best"}
    assert {r["entry"] for r in rows if r["oracle"] == "false"} == {"base", "+spell"}
    assert [r["oracle"] for r in rows] == sorted((r["oracle"] for r in rows), key=lambda v: v == "true")  # upper bounds last

    page = (out / "report.html").read_text()
    main_html, upper_html = page.split('id="upper-bounds"')[0], page.split('id="upper-bounds"')[1].split("<h2>Charts")[0]
    assert "<td>+peek</td>" not in main_html and "<td>+best</td>" not in main_html and "<td>+spell</td>" in main_html
    assert "<td>+peek</td>" in upper_html and "<td>+best</td>" in upper_html and "<td>base</td>" not in upper_html

    main_console, upper_console = printed.split("upper bounds", 1)
    assert "+peek" not in main_console and "+spell" in main_console
    assert "+peek" in upper_console.split("per category")[0] and "+spell" not in upper_console.split("per category")[0]


def test_oracle_rows_report_their_editor_calls(report):
    run, _ = report
    calls = {r.entry: r.editor_calls for r in run.summary if r.category == "all"}
    assert calls == {"base": 1.0, "+spell": 1.0, "+peek": 1.0, "+best": 2.0}
    overall = {r.entry: r.metrics["overall"].mean for r in run.summary if r.category == "all"}
    assert overall["+peek"] == pytest.approx(1.0) and overall["base"] == pytest.approx(0.5)


def test_charts_draw_oracles_last_hatched_and_labelled():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    rows = {e: SummaryRow(e, "all", 2, {"o": MeanCI(0.5, 0.4, 0.6)}, 0.1) for e in ("base", "+peek")}
    _grouped_bars(ax, ["o"], ["base", "+peek"], lambda entry, metric: rows[entry].metrics[metric], {"+peek"})
    _handles, labels = ax.get_legend_handles_labels()
    assert labels == ["base", "+peek (oracle)"]
    assert [patch.get_hatch() for patch in ax.patches] == [None, "//"]
    plt.close(fig)
