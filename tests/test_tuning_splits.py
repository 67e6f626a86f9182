"""Tuning reads the val splits, reporting reads shapes-bench / shapes-mt (issue 21, section 5)."""

from pathlib import Path

import yaml

from refine.backbones.train_base import bench_subset
from refine.compare.benchmarks.shapes import shapes_mt_val, shapes_val
from refine.config import load_config
from refine.edit_r1.config import EditR1Config
from refine.edit_r1.data import evaluation_requests
from refine.registry import registry

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"


def test_edit_r1_evaluates_on_shapes_val_by_default_and_in_the_preset():
    assert EditR1Config().eval.benchmark == "shapes-val"
    preset = load_config(EditR1Config, CONFIGS / "edit_r1" / "shapes.yaml", [])
    assert preset.eval.benchmark == "shapes-val"
    requests = evaluation_requests(preset.eval.benchmark, preset.eval.cases)
    assert len(requests) == 108 and all(r.meta["case_id"].startswith("val-") for r in requests)


def test_base_training_evaluates_on_shapes_val():
    cases = bench_subset(6, 3)
    assert len(cases) == 9 and all(c.id.startswith("val-") for c in cases)
    assert {c.phrasing for c in cases} == {"direct", "indirect"}


def test_compare_reports_on_shapes_bench():
    assert yaml.safe_load((CONFIGS / "compare" / "shapes.yaml").read_text())["benchmark"] == "shapes-bench"


def test_val_splits_are_benchmark_kinds_too():
    assert {"shapes-val", "shapes-mt-val"} <= set(registry.kinds("benchmark"))
    single, multi = shapes_val(), shapes_mt_val()
    assert not single.multi_turn and len(single.cases()) == 540
    assert multi.multi_turn and len(multi.cases()) == 120 and "success" in multi.metrics
