"""A VLM as the judge of a ShapeEdit comparison (`benchmark: {kind: shapes-bench, judge: ...}`), on a tiny random ShapeEdit VLM."""

import json
from pathlib import Path

import pytest

import refine
import refine.compare.benchmarks.shapes_vlm as shapes_vlm
from refine.compare import run_compare
from refine.compare.benchmarks.shapes_vlm import VLMJudge, judge_spec
from refine.compare.runner import build_benchmark, load_compare_config, prepare
from refine.errors import ArtifactError, ConfigError
from refine.images import load_image
from refine.rewards.backends.transformers_vlm import TransformersVLM
from refine.rewards.mllm import MLLMJudge
from refine.shapes.data import find_case, load_split
from refine.shapes.judge import judge_edit
from refine.shapes.vlm.model import VLMSize, build_shapes_vlm

PRESET = Path(__file__).resolve().parents[2] / "examples" / "configs" / "compare" / "shapes-vlm-judge.yaml"
EDITOR = "refine.testing.shapes_fakes:direct_only_editor"  # the direct phrasing gives the exact target, else the source
EXACT = ("overall", "if", "cc", "pq")


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> Path:
    return build_shapes_vlm(tmp_path_factory.mktemp("shapes-vlm"), VLMSize.tiny())


def _spec(folder: Path, mode: str = "score_logit") -> dict:
    return {"kind": "mllm", "mode": mode, "backend": {"kind": "transformers", "model": str(folder)}}


def _config(out: Path, judge=None, split: str = "shapes-bench", limit: int = 4) -> dict:
    benchmark = {"kind": split} if judge is None else {"kind": split, "judge": judge}
    return {
        "benchmark": benchmark,
        "limit": limit,
        "editor": {"kind": EDITOR},
        # on direct cases base edits exactly (O = 1) and `broken` leaves the source (O = 0): pairs to order
        "entries": {"base": {}, "broken": {"editor": {"kind": EDITOR, "direct_works": False}}},
        "out_dir": str(out),
        "progress": False,
        "bootstrap": 200,
    }


def test_the_vlm_judges_scores_are_the_headline_under_its_label_with_the_exact_o_beside_them(tiny_vlm, tmp_path):
    run = run_compare(_config(tmp_path / "out", _spec(tiny_vlm)))
    assert run.benchmark.metrics == ("vlm_score_logit", *EXACT)
    direct = MLLMJudge(TransformersVLM(tiny_vlm), mode="score_logit")  # the judge, called on each edit by hand
    for row in run.rows:
        case = find_case(row.case_id)
        output = load_image(row.image)
        alone = direct([case.source_image], [output], [case.instruction], [case.to_request().meta]).scores[0]
        assert row.scores["vlm_score_logit"] == pytest.approx(alone, abs=1e-6)  # batched with others: same score
        exact = judge_edit(case.source_image, output, case)
        assert [row.scores[m] for m in EXACT] == [exact.overall, exact.if_, exact.cc, exact.pq]  # unchanged beside it
    assert {r.scores["overall"] for r in run.rows} == {0.0, 1.0}  # both judges saw edits that O tells apart

    out = run.out_dir
    summary = json.loads((out / "summary.json").read_text())
    protocol = summary["judge_protocol"]
    assert summary["metrics"][0] == protocol["metric"] == "vlm_score_logit"
    label = f"VLM judge: score_logit, {tiny_vlm.parent.name}/{tiny_vlm.name}"  # a run's final/ alone would say nothing
    assert protocol["label"] == label and protocol["exact_metrics"] == list(EXACT)
    assert protocol["spec"] == _spec(tiny_vlm) and protocol["agreement"]["edits"] == len(run.rows) == 8
    assert protocol["agreement"]["pairs"] >= 1  # base vs broken on the direct cases
    markdown = (out / "summary.md").read_text()
    assert markdown.startswith(f"# shapes-bench [{label}]")
    assert "the headline vlm_score_logit is a VLM judge's score" in markdown and "not ShapeEdit's O" in markdown
    assert "| entry | category | n | vlm_score_logit | overall | if | cc | pq |" in markdown
    html = (out / "report.html").read_text()
    assert "[VLM judge: score_logit" in html and "not ShapeEdit&#x27;s O" in html
    assert (out / "summary.csv").read_text().splitlines()[0].split(",")[4] == "vlm_score_logit_mean"
    case_row = json.loads((out / "cases.jsonl").read_text().splitlines()[0])
    assert list(case_row["scores"])[0] == "vlm_score_logit" and case_row["details"]["vlm"][0]["mode"] == "score_logit"


def test_scores_are_cached_under_the_judge_so_an_exact_score_is_never_read_as_a_vlm_score(tiny_vlm, tmp_path):
    out = tmp_path / "out"
    exact = run_compare(_config(out), write_report=False)
    assert exact.benchmark.metrics == EXACT and exact.benchmark.protocol_label is None  # the default is untouched
    vlm = run_compare(_config(out, _spec(tiny_vlm)), write_report=False)
    assert vlm.edited == {"base": 0, "broken": 0}  # the edits are the judge's business only: reused
    assert vlm.scored == {"base": 4, "broken": 4}  # every score judged anew, none read from the exact run
    assert vlm.benchmark.judge_key.startswith(exact.benchmark.judge_key + "-vlm_score_logit-")
    again = run_compare(_config(out), write_report=False)
    assert again.scored == {"base": 0, "broken": 0} and [r.scores for r in again.rows] == [r.scores for r in exact.rows]
    other = run_compare(_config(out, _spec(tiny_vlm, "yesno_logit")), write_report=False)
    assert other.scored == {"base": 4, "broken": 4} and "yesno_logit" in other.benchmark.judge_key
    assert [r.scores["overall"] for r in other.rows] == [r.scores["overall"] for r in vlm.rows]


def test_a_multi_turn_sequence_scores_the_mean_of_its_turns_each_judged_from_the_image_it_edited(tiny_vlm, tmp_path):
    config = _config(tmp_path / "mt", _spec(tiny_vlm), split="shapes-mt", limit=1)
    config["entries"] = {"base": {}}
    [row] = run_compare(config, write_report=False).rows
    sequence = next(s for s in load_split("shapes-mt") if s.id == row.case_id)
    outputs = [load_image(p) for p in row.turn_images]
    direct = MLLMJudge(TransformersVLM(tiny_vlm), mode="score_logit")
    inputs = [sequence.source_image, *outputs[:-1]]  # turn k edited turn k-1's output
    alone = [
        direct([source], [output], [case.instruction], [case.to_request().meta]).scores[0]
        for case, source, output in zip(sequence.cases, inputs, outputs)
    ]
    assert [turn["vlm_score_logit"] for turn in row.turn_scores] == pytest.approx(alone, abs=1e-6)
    assert row.scores["vlm_score_logit"] == pytest.approx(sum(alone) / 3, abs=1e-6)
    assert "o_t3" in row.scores and "success" in row.scores  # the exact per-turn view is still there


def test_the_shorthand_vlm_is_the_bundled_model_read_in_score_logit_mode(tiny_vlm, tmp_path, monkeypatch):
    assert shapes_vlm.BUNDLED_SHAPES_VLM == Path(refine.__file__).resolve().parent / "assets" / "shapes-vlm"
    monkeypatch.setattr(shapes_vlm, "BUNDLED_SHAPES_VLM", tmp_path / "not-trained")
    with pytest.raises(ArtifactError, match=r"refine train vlm .* final/ folder to refine/assets/shapes-vlm.*or name your model"):
        judge_spec("vlm")
    monkeypatch.setattr(shapes_vlm, "BUNDLED_SHAPES_VLM", tiny_vlm)
    assert judge_spec("vlm") == judge_spec({"kind": "vlm"}) == _spec(tiny_vlm)
    assert judge_spec({"kind": "vlm", "mode": "yesno_logit", "min_mass": 0.1}) == {**_spec(tiny_vlm, "yesno_logit"), "min_mass": 0.1}
    assert VLMJudge("vlm").label == "VLM judge: score_logit, bundled shapes-vlm"


BAD_JUDGES = [
    ("vln", ConfigError, "judge 'vln' is not a judge; write judge: vlm"),
    ({"mode": "score_logit"}, ConfigError, "has no 'kind'"),
    ({"kind": "shapes_overall"}, ConfigError, "judge kind 'shapes_overall' is not an MLLM judge"),
    ({"kind": "mllm", "mode": "score_logt", "backend": {"kind": "openai", "base_url": "http://h:1/v1", "model": "m"}},
     ConfigError, "judge mode 'score_logt' is unknown"),
    ({"kind": "mllm", "min_mas": 0.1, "backend": {"kind": "openai", "base_url": "http://h:1/v1", "model": "m"}},
     ConfigError, "unknown key 'min_mas' \\(did you mean 'min_mass'\\?\\)"),
    ({"kind": "mllm"}, ConfigError, "judge needs a backend mapping"),
    ({"kind": "mllm", "backend": {"kind": "transformrs", "model": "m"}}, ConfigError, "did you mean 'transformers'"),
    ({"kind": "vlm", "backend": {"kind": "openai", "base_url": "http://h:1/v1", "model": "m"}}, ConfigError, "is the bundled model"),
    ({"kind": "mllm", "backend": {"kind": "transformers", "model": "/no/such/vlm"}}, ArtifactError, "'/no/such/vlm' does not exist"),
]


@pytest.mark.parametrize("judge, error, message", BAD_JUDGES, ids=[str(i) for i in range(len(BAD_JUDGES))])
def test_a_bad_judge_fails_when_the_benchmark_is_built_saying_what_to_write(judge, error, message):
    with pytest.raises(error, match=message):
        build_benchmark({"kind": "shapes-bench", "judge": judge})


def test_the_example_preset_asks_for_the_bundled_vlm_and_plans_once_it_exists(tiny_vlm, tmp_path, monkeypatch):
    assert PRESET.read_text().splitlines()[0] == "# refine compare examples/configs/compare/shapes-vlm-judge.yaml"
    config = load_compare_config(str(PRESET), [f"out_dir={tmp_path}"])  # loads without the model: nothing built yet
    assert config.benchmark == {"kind": "shapes-bench", "judge": "vlm"} and config.limit == 60
    assert list(config.entries) == ["base", "+edit_r1"]
    monkeypatch.setattr(shapes_vlm, "BUNDLED_SHAPES_VLM", tiny_vlm)  # stands in for the bundle, which may not exist yet
    plan = prepare(config)  # every check `refine compare` makes before compute: benchmark, judge, entries, artifacts
    assert plan.benchmark.metrics[0] == "vlm_score_logit" and len(plan.cases) == 60
    assert plan.benchmark.vlm_judge.spec["backend"]["model"] == str(tiny_vlm)


def test_a_list_of_modes_scores_their_mean_on_one_loaded_model(tiny_vlm, tmp_path, monkeypatch):
    modes = ["score_logit", "yesno_logit"]
    loads = []
    real_init = TransformersVLM.__init__

    def counted(self, *args, **kwargs):
        loads.append(args)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(TransformersVLM, "__init__", counted)
    run = run_compare(_config(tmp_path / "out", {**_spec(tiny_vlm), "mode": modes}))
    assert len(loads) == 1  # both modes read the one backend
    assert run.benchmark.metrics == ("vlm_score_logit+yesno_logit", *EXACT)
    backend = TransformersVLM(tiny_vlm)
    single = {m: MLLMJudge(backend, mode=m) for m in modes}
    for row in run.rows:
        case = find_case(row.case_id)
        args = ([case.source_image], [load_image(row.image)], [case.instruction], [case.to_request().meta])
        parts = [single[m](*args).scores[0] for m in modes]
        assert row.scores["vlm_score_logit+yesno_logit"] == pytest.approx(sum(parts) / 2, abs=1e-6)
    summary = json.loads((run.out_dir / "summary.json").read_text())
    assert summary["judge_protocol"]["mode"] == "score_logit+yesno_logit"
    assert "the mean of MLLMJudge score_logit and yesno_logit" in summary["judge_protocol"]["note"]
    case_row = json.loads((run.out_dir / "cases.jsonl").read_text().splitlines()[0])
    assert set(case_row["details"]["vlm"][0]) >= {"score_logit", "yesno_logit", "score_logit/details"}


BAD_MODE_LISTS = [
    ([], "give one mode or a list of distinct modes"),
    (["score_logit", "score_logit"], "give one mode or a list of distinct modes"),
    (["score_logit", 3], "give one mode or a list of distinct modes"),
    (["score_logit", "score_logt"], "judge mode 'score_logt' is unknown"),  # each listed mode is checked
]


@pytest.mark.parametrize("mode, message", BAD_MODE_LISTS, ids=[str(i) for i in range(len(BAD_MODE_LISTS))])
def test_a_bad_list_of_modes_is_refused_when_the_benchmark_is_built(mode, message):
    judge = {"kind": "mllm", "mode": mode, "backend": {"kind": "openai", "base_url": "http://h:1/v1", "model": "m"}}
    with pytest.raises(ConfigError, match=message):
        build_benchmark({"kind": "shapes-bench", "judge": judge})
