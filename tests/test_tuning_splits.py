"""Tuning reads the val splits, reporting reads shapes-bench / shapes-mt (issue 21, section 5)."""

from itertools import islice
from pathlib import Path

import yaml

from refine.shapes.editor_training.data import ShapesBatches
from refine.shapes.evaluate import bench_subset
from refine.compare.benchmarks.shapes import shapes_mt_val, shapes_val
from refine.config import load_config
from refine.edit_r1.config import DataConfig as EditR1Data
from refine.edit_r1.config import EditR1Config
from refine.edit_r1.data import RequestSource, evaluation_requests
from refine.inline_critic.config import DataConfig as CriticData
from refine.inline_critic.data import edit_pair_stream
from refine.registry import registry
from refine.shapes.data import ShapeCase, case_key, find_case, reserved_case_keys, stream_case

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"


def test_edit_r1_evaluates_on_shapes_val_by_default_and_in_the_preset():
    assert EditR1Config().eval.benchmark == "shapes-val"
    preset = load_config(EditR1Config, CONFIGS / "edit_r1" / "shapes.yaml", [])
    assert preset.eval.benchmark == "shapes-val"
    requests = evaluation_requests(preset.eval.benchmark, preset.eval.cases)
    assert len(requests) == 216 and all(r.meta["case_id"].startswith("val-") for r in requests)


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


# Draws that repeat a shapes-bench case before the exclusion (found by benchmarks/shapes_overlap.py):
# draw 2631 of training_stream(0) at the default 30% indirect phrasings, and draw 10 of base
# training's batch 1 (seed 0, 25% indirect, the bundled editor's own data).
STREAM_HIT = (0, 2631, 0.3, "bench-resize-direct-16")


def test_base_training_batches_skip_benchmark_cases():
    batches = ShapesBatches(seed=0, batch_size=32, tokenizer=None, indirect_fraction=0.25)
    raw = stream_case(batches.batch_seed(1), 10, indirect_fraction=0.25, skip_reserved=False)
    assert case_key(raw) == case_key(find_case("bench-resize-direct-15"))
    drawn = batches.cases(1)
    assert drawn[10].id == raw.id and not [c.id for c in drawn if case_key(c) in reserved_case_keys()]


def test_edit_r1_requests_skip_benchmark_cases():
    seed, index, indirect, case_id = STREAM_HIT
    assert case_key(stream_case(seed, index, indirect_fraction=indirect, skip_reserved=False)) == case_key(find_case(case_id))
    [request] = RequestSource(EditR1Data(kind="shapes", seed=seed)).take(index, 1)
    assert case_key(ShapeCase.from_dict(request.meta["shapes_case"])) not in reserved_case_keys()


def test_inline_critic_pairs_skip_benchmark_cases():
    seed, index, _, case_id = STREAM_HIT
    bench = find_case(case_id)
    pair = next(islice(edit_pair_stream(CriticData(kind="shapes", seed=seed)), index, None))
    assert (pair.source.tobytes(), pair.target.tobytes()) != (bench.source_image.tobytes(), bench.target_image.tobytes())
