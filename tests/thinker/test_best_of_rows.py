"""Best-of-n SFT rows: the choice rule, the mean over editor seeds, the rows written, resume, the CLI."""

from __future__ import annotations

import json

import pytest
from datasets import load_from_disk
from PIL import Image

import refine.thinker.best_of_rows as best_of
from refine.cli import main
from refine.errors import ConfigError
from refine.rewards.base import RewardOutput
from refine.shapes.data import stream_case
from refine.thinker.best_of_rows import KEEP, BestOfConfig, choose, score_candidates, target_of, write_best_of_rows
from refine.thinker.grpo_rewards import EditReward, answer_instruction
from refine.thinker.vlm import KEEP_REPLY
from refine.types import EditResult

THINKER = "refine/assets/shapes-thinker"  # the bundled rewrite-only thinker: real rewrites, loads in a second


def brightness_judge(sources, outputs, instructions, metas):
    return RewardOutput([o.getpixel((0, 0))[0] / 255 for o in outputs])


class ShortIsBrightEditor:
    """Brighter the shorter its instruction; counts its calls."""

    def __init__(self):
        self.calls = 0

    def edit(self, requests):
        self.calls += 1
        return [EditResult(Image.new("RGB", (4, 4), (int(255 * max(0.0, 1 - len(r.instruction) / 80)),) * 3), r.instruction)
                for r in requests]


class SeedEditor:
    """The user's instruction always gives gray 128; any other gives (seed % 4) * 60: only the seed decides."""

    def edit(self, requests):
        return [EditResult(Image.new("RGB", (4, 4), ((128 if r.meta["shapes_case"]["instruction"] == r.instruction else (r.seed % 4) * 60),) * 3),
                           r.instruction) for r in requests]


def test_choose_keeps_unless_a_rewrite_beats_keeping_by_the_margin():
    assert choose({KEEP: 0.0, "a": -0.2, "b": -0.01}) == KEEP
    assert choose({KEEP: 0.0, "a": 0.05, "b": 0.2}) == "b"
    assert choose({KEEP: 0.0, "a": 0.05}, margin=0.1) == KEEP
    assert choose({KEEP: 0.0}) == KEEP
    assert choose({KEEP: 0.0, "a": 0.0}) == KEEP  # a tie keeps the user's words


def test_target_of_drops_ties_and_keeps_where_the_rewrite_hurt():
    config = BestOfConfig(output_dir="unused", thinker="unused", samples=1, margin=0.05, ties="drop")
    result = lambda greedy, sampled: {"rewrites": ["a", "b"], "gains": {KEEP: 0.0, "a": greedy, "b": sampled}}  # noqa: E731
    assert target_of(result(0.2, 0.3), config) == "b"
    assert target_of(result(0.2, 0.3), config.model_copy(update={"samples": 0})) == "a"  # the sampled rewrite is not considered
    assert target_of(result(-0.2, -0.1), config) == KEEP  # every rewrite clearly hurt: keep the user's words
    assert target_of(result(-0.2, 0.03), config) is None  # one within the margin: no evidence, no row
    assert target_of(result(-0.2, 0.03), config.model_copy(update={"ties": "keep"})) == KEEP
    assert target_of({"rewrites": [None], "gains": {KEEP: 0.0}}, config) is None
    # label="right": the greedy rewrite where it is the canonical phrasing, else keep, whatever the gains say
    right = config.model_copy(update={"label": "right"})
    case = {"instruction": "paint it like the sky", "direct": "make the circle blue", "gains": {KEEP: 0.0, "make the circle blue": -0.3}}
    assert target_of({**case, "rewrites": ["make the circle blue", "b"]}, right) == "make the circle blue"
    assert target_of({**case, "rewrites": ["make the square blue", "make the circle blue"]}, right) == KEEP  # only the greedy one counts
    assert target_of({**case, "instruction": "make the circle blue", "rewrites": ["make the circle blue"]}, right) == KEEP  # already direct


def test_score_candidates_averages_the_gain_over_editor_seeds():
    cases = [stream_case(61, i) for i in range(2)]
    reward = EditReward(SeedEditor(), brightness_judge, answer_of=answer_instruction)
    gains = score_candidates(reward, cases, [[KEEP, "make it so"], [KEEP]], seed_base=[0, 10, 20, 30])
    # case 0's seeds are 0, 10, 20, 30 -> (s % 4) * 60 = 0, 120, 0, 120; the plain edit is 128 every time
    assert gains[0][KEEP] == 0.0 and gains[1] == {KEEP: 0.0}
    assert gains[0]["make it so"] == pytest.approx((0 + 120 + 0 + 120) / 4 / 255 - 128 / 255, abs=1e-9)


def test_rows_target_the_best_edit_or_keep_and_resume(tmp_path, monkeypatch):
    editor = ShortIsBrightEditor()
    monkeypatch.setattr(best_of, "build_editor", lambda spec: editor)
    monkeypatch.setattr(best_of.registry, "build", lambda kind, spec: brightness_judge)
    config = BestOfConfig(output_dir=str(tmp_path / "bo"), thinker=THINKER, cases=6, chunk=4, samples=1, seeds=2, progress=False)

    write_best_of_rows(config.model_copy(update={"cases": 4}))  # one chunk, then "killed"
    calls = editor.calls
    summary = write_best_of_rows(config)  # resumes: only the second chunk is thought and edited
    assert editor.calls - calls == 2 * 2  # the second chunk: 2 seeds x (plain edits, candidates)
    results = [json.loads(line) for line in (tmp_path / "bo" / "candidates.jsonl").read_text().splitlines()]
    assert [r["index"] for r in results] == list(range(6)) and all("target" not in r for r in results)

    rows = load_from_disk(str(tmp_path / "bo" / "dataset"))["sft"]
    assert len(rows) == 6 and summary["rows"] == 6
    for result, row in zip(results, rows):
        instruction = result["instruction"]
        rewrites = {r for r in result["rewrites"] if r is not None and r.strip() != instruction.strip()}
        # this editor pays shortness only, so the best candidate is the shortest, if shorter than the user's words
        shorter = [r for r in rewrites if len(r) < len(instruction)]
        want = min(shorter, key=len) if shorter else KEEP_REPLY  # a kept row says the one-token keep reply
        said = row["completion"][0]["content"][0]["text"]
        assert len(said) == len(want), (result, said)
        assert row["choice"] == ("rewrite" if shorter else "keep")
        assert row["images"][0].size == stream_case(61, result["index"]).source_image.size
        assert [part["type"] for part in row["prompt"][-1]["content"]] == ["image", "text"]
    assert summary["kept"] == pytest.approx(sum(row["choice"] == "keep" for row in rows) / 6, abs=1e-3)

    # the choice is made when the rows are written: dropping ties rebuilds from the log, with no new edits
    calls = editor.calls
    summary = write_best_of_rows(config.model_copy(update={"ties": "drop", "samples": 0}))
    assert editor.calls == calls
    rows = load_from_disk(str(tmp_path / "bo" / "dataset"))["sft"]
    greedy = {r["index"]: r["rewrites"][0] for r in results}
    want = [r for r in results if greedy[r["index"]] is not None and r["gains"].get(greedy[r["index"]], 0.0) != 0.0]
    assert summary["rows"] == len(rows) == len(want)
    assert all((row["choice"] == "rewrite") == (r["gains"][greedy[r["index"]]] > 0) for row, r in zip(rows, want))

    # keep_reply=copy: a kept row's target is the user's instruction word for word
    write_best_of_rows(config.model_copy(update={"keep_reply": "copy"}))
    rows = load_from_disk(str(tmp_path / "bo" / "dataset"))["sft"]
    kept = [(row, r) for row, r in zip(rows, results) if row["choice"] == "keep"]
    assert all(row["completion"][0]["content"][0]["text"] == r["instruction"] for row, r in kept)


def test_cli_best_of_writes_the_dataset(tmp_path, monkeypatch):
    monkeypatch.setattr(best_of, "build_editor", lambda spec: ShortIsBrightEditor())
    monkeypatch.setattr(best_of.registry, "build", lambda kind, spec: brightness_judge)
    out = tmp_path / "bo"
    main(["thinker", "best-of", "--config", "thinker_data/shapes-best-of", f"output_dir={out}", f"thinker={THINKER}",
          "cases=2", "samples=0", "seeds=1", "progress=false"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == 2 and summary["samples"] == 0
    assert set(load_from_disk(str(out / "dataset"))) == {"sft"}


def test_presets_validate_and_the_config_refuses_gains_without_edits():
    from refine.config import load_config
    from refine.presets import find_preset
    from refine.thinker.train_config import ThinkerTrainConfig

    rows = load_config(BestOfConfig, find_preset("thinker_data/shapes-best-of"), [])
    assert (rows.label, rows.keep_reply, rows.seeds, rows.stream_seed) == ("gain", "token", 4, 61)
    sft = load_config(ThinkerTrainConfig, find_preset("thinker_train/shapes-sft-best-of"), [])
    assert (sft.stage, sft.split, sft.prompt, sft.dataset) == ("sft", "sft", "shapes-rewrite", rows.output_dir + "/dataset")
    with pytest.raises(ConfigError, match="seeds >= 1"):
        load_config(BestOfConfig, find_preset("thinker_data/shapes-best-of"), ["seeds=0"])
    assert load_config(BestOfConfig, find_preset("thinker_data/shapes-best-of"), ["seeds=0", "label=right"]).seeds == 0
    with pytest.raises(ConfigError, match="did you mean"):
        load_config(BestOfConfig, find_preset("thinker_data/shapes-best-of"), ["margn=0.1"])


def test_abstention_rows_need_no_editor(tmp_path, monkeypatch):
    def no_editor(spec):
        raise AssertionError("seeds=0 must not load an editor")

    monkeypatch.setattr(best_of, "build_editor", no_editor)
    config = BestOfConfig(output_dir=str(tmp_path / "bo"), thinker=THINKER, cases=4, samples=0, seeds=0, label="right", progress=False)
    summary = write_best_of_rows(config)
    results = [json.loads(line) for line in (tmp_path / "bo" / "candidates.jsonl").read_text().splitlines()]
    rows = load_from_disk(str(tmp_path / "bo" / "dataset"))["sft"]
    said = [row["completion"][0]["content"][0]["text"] for row in rows]
    assert said == [r["rewrites"][0] if r["rewrites"][0] == r["direct"] != r["instruction"] else KEEP_REPLY for r in results]
    assert summary["greedy_gain"] is None and summary["rows"] == 4
    with pytest.raises(ConfigError, match="another stream"):  # the log is stream 61's: no silent mix with stream 62
        write_best_of_rows(config.model_copy(update={"stream_seed": 62}))
