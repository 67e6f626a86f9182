"""The MT-EditFlow preset whose IF judge is the ShapeEdit VLM: loaded as shipped, run for an iteration on a tiny VLM."""

from pathlib import Path

import pytest

from refine.config import load_config
from refine.multiturn.config import MultiTurnConfig
from refine.multiturn.train import train
from refine.rewards.mllm import MLLMJudge
from refine.testing.edit_r1 import tiny_backbone

PRESET = Path(__file__).resolve().parents[2] / "examples" / "configs" / "multiturn" / "shapes_vlm_reward.yaml"



def test_one_iteration_is_judged_by_the_vlm_and_evaluated_with_the_exact_o(tiny_shapes_vlm, tmp_path, monkeypatch):
    config = load_config(MultiTurnConfig, PRESET, [
        f"reward.instruction.backend.model={tiny_shapes_vlm}", "rollout.turns=2", "rollout.group_size=2",
        "rollout.sequences_per_iteration=2", "rollout.steps=2", "rollout.sampler=euler", "train.iterations=1",
        "train.micro_batch=4", "eval.sequences=2", "log.progress=false", f"log.output_dir={tmp_path}",
    ])
    assert (config.reward.instruction["kind"], config.reward.instruction["mode"]) == ("mllm", "score_logit")
    assert (config.eval.reward.instruction, config.eval.reward.consistency) == ({"kind": "shapes"}, {"kind": "shapes"})
    judged = []  # every score the VLM judge returned
    real_call = MLLMJudge.__call__
    monkeypatch.setattr(MLLMJudge, "__call__", lambda self, *a: judged.append(out := real_call(self, *a)) or out)

    first, last = train(config, backbone=tiny_backbone()).metrics  # the rewards are built from the preset's specs

    # One VLM call, the training turns (item-major: trajectory i, turn k at 2 i + k); the evaluations are exact.
    assert len(judged) == 1 and len(judged[0].scores) == 4 * 2
    scores = judged[0].scores
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert last["train_if_t1"] == pytest.approx(sum(scores[0::2]) / 4) and last["train_if_t2"] == pytest.approx(sum(scores[1::2]) / 4)
    for row in (first, last):  # the exact judge's O on shapes-mt-val, at evaluation
        assert 0.0 <= row["eval_o_last"] <= 1.0 and row["eval_o_last"] == row["eval_o_t2"]
