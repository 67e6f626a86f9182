"""The Edit-R1 preset whose reward is the ShapeEdit VLM judge: loaded as shipped, run for an iteration on a tiny VLM."""

import json
from pathlib import Path

import pytest

from refine.config import load_config
from refine.edit_r1.config import EditR1Config
from refine.edit_r1.train import train
from refine.errors import ConfigError
from refine.rewards.mllm import MLLMJudge
from refine.testing.edit_r1 import tiny_backbone

PRESET = Path(__file__).resolve().parents[2] / "examples" / "configs" / "edit_r1" / "shapes_vlm_reward.yaml"



def test_one_iteration_is_rewarded_by_the_vlm_with_the_exact_o_logged_beside_it(tiny_shapes_vlm, tmp_path, monkeypatch):
    config = load_config(EditR1Config, PRESET, [
        f"reward.backend.model={tiny_shapes_vlm}", "rollout.group_size=4", "rollout.groups_per_iteration=2", "rollout.steps=2",
        "train.micro_batch=4", "train.iterations=1", "eval.cases=2", "eval.steps=2", "log.sample_every=0",
        "log.progress=false", f"log.output_dir={tmp_path}",
    ])
    assert (config.reward["kind"], config.reward["mode"], config.reward["backend"]["kind"]) == ("mllm", "score_logit", "transformers")
    assert config.track_rewards == {"o": {"kind": "shapes_overall"}} and config.eval.reward == {"kind": "shapes_overall"}
    judged = []  # every score the VLM judge returned
    real_call = MLLMJudge.__call__
    monkeypatch.setattr(MLLMJudge, "__call__", lambda self, *a: judged.append(out := real_call(self, *a)) or out)

    result = train(config, backbone=tiny_backbone())  # the reward is built from the preset's spec

    logged = json.loads((tmp_path / "rollouts" / "rank0.jsonl").read_text().splitlines()[-1])
    vlm, exact = logged["rewards"], logged["track"]["o"]
    assert len(judged) == 1 and vlm == pytest.approx(judged[0].scores)  # training only: eval and tracking are exact
    assert len(vlm) == 8 and all(0.0 <= r <= 1.0 for r in vlm) and vlm != exact
    first, last = result.metrics
    assert last["reward_mean"] == pytest.approx(sum(vlm) / 8) and last["track_o_mean"] == pytest.approx(sum(exact) / 8)
    assert 0.0 <= first["eval_reward"] <= 1.0 and 0.0 <= last["eval_reward"] <= 1.0


def test_a_tracked_reward_name_must_be_a_metric_key():
    with pytest.raises(ConfigError, match="track_rewards.o/k"):
        load_config(EditR1Config, overrides=["track_rewards.o/k.kind=shapes_overall"])
