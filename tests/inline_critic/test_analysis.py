import json
import math

import pytest

from refine.errors import ArtifactError
from refine.inline_critic.analysis import run_analysis


@pytest.mark.slow  # shares the ~20 s three-stage fixture
def test_analyze_writes_numbers_and_plots(three_stage_run, tmp_path):
    config, backbone, _ = three_stage_run
    report = run_analysis(config, config.output_dir, tmp_path, cases=8, steps=3, backbone=backbone)
    saved = json.loads((tmp_path / "analysis.json").read_text())
    assert saved["summary"] == report["summary"]
    assert (tmp_path / "probing.png").stat().st_size > 1000 and (tmp_path / "alignment.png").stat().st_size > 1000
    study = report["probing"]
    assert study["layers"] == [0, 1] and len(study["times"]) == 3
    # error maps of a probe and of the final layer share their spatial pattern (same targets)
    assert study["spearman_by_layer"]["1"]["mean"] > 0.3
    for key in ("experiment_a", "experiment_b", "experiment_c", "shuffled_control"):
        assert report["summary"][key]["n"] == 8 and math.isfinite(report["summary"][key]["mean"])
    assert abs(report["summary"]["shuffled_control"]["mean"]) < 0.2


def test_analyze_needs_a_trained_run(tmp_path, tiny_shapes_backbone):
    from refine.inline_critic.config import InlineCriticConfig

    with pytest.raises(ArtifactError, match="train the critic first"):
        run_analysis(InlineCriticConfig(), tmp_path, tmp_path / "out", cases=2, backbone=tiny_shapes_backbone())
