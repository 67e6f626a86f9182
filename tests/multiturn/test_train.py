"""The MT-EditFlow loop on a tiny editor: exact resume, the CPU cap, the exported LoRA, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from typer.testing import CliRunner

from refine._compat import ensure_torchvision_importable
from refine.cli import app, main
from refine.config import load_config
from refine.multiturn.config import MultiTurnConfig
from refine.multiturn.refiner import MultiTurnRefiner
from refine.multiturn.rewards import TurnRewards
from refine.multiturn.train import train
from refine.rollout.flow_editor import FlowEditor
from refine.testing.edit_r1 import brightness_reward, tiny_backbone
from refine.testing.multiturn import pixel_consistency, tiny_config
from refine.training.metrics import read_metrics
from refine.types import EditRequest

ensure_torchvision_importable()  # peft/diffusers import torchvision; see refine/_compat.py


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rewards():
    """Dense toy rewards (a random tiny editor scores 0 on ShapeEdit's judge, which would train nothing)."""
    return TurnRewards(brightness_reward, pixel_consistency)


def _config(out, iterations=3, *overrides):
    """The tiny run with a 2-sequence evaluation on shapes-mt-val every iteration."""
    return tiny_config(out, iterations, "eval.benchmark=shapes-mt-val", "eval.sequences=2", "eval.every=1", *overrides)


def _lora_file(path):
    with safe_open(str(path), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()


def _rows(out):
    return [{k: v for k, v in row.items() if not k.startswith("seconds") and k != "cpu_seconds_total"} for row in read_metrics(out)]


def test_runs_stopped_by_the_cpu_cap_and_resumed_equal_the_uninterrupted_run_bitwise(tmp_path):
    straight = train(_config(tmp_path / "straight"), backbone=tiny_backbone(), rewards=_rewards())
    assert straight.iterations == 3 and not straight.stopped_early
    assert straight.metrics[-1]["optimizer_steps"] == 2  # 2 x 2 x 2 = 8 samples, micro-batch 4, a step each

    capped = tmp_path / "capped"
    invocations = []
    for _ in range(5):  # a cap this small stops every invocation after one iteration (kill-equivalent), checkpointed
        result = train(_config(capped, 3, "train.max_cpu_seconds=1e-6"), backbone=tiny_backbone(), rewards=_rewards())
        invocations.append((result.iterations, result.stopped_early))
        if not result.stopped_early:
            break
    assert invocations == [(1, True), (2, True), (3, False)]
    assert result.weights_digest == straight.weights_digest
    # the exported LoRA: equal tensors, bit for bit, and equal metadata (safetensors may order the
    # header's metadata keys differently between processes, so the files' bytes are not compared)
    exported = [_lora_file(folder / "lora" / "pytorch_lora_weights.safetensors") for folder in (capped, tmp_path / "straight")]
    assert exported[0][1] == exported[1][1] and exported[0][0].keys() == exported[1][0].keys()
    assert all(torch.equal(exported[0][0][k], exported[1][0][k]) for k in exported[0][0])
    assert _rows(capped) == _rows(tmp_path / "straight")  # same rewards, losses and evaluations, each logged once
    assert [i for i, _ in result.eval_history] == [0, 1, 2, 3]


def test_training_moves_the_weights_and_the_lora_refines_a_flow_editor(tmp_path):
    result = train(_config(tmp_path, 2), backbone=tiny_backbone(), rewards=_rewards())
    row = result.metrics[-1]
    for key in ("train_if_t1", "train_cc_t2", "train_o_t2", "train_success_t2", "eval_o_t2", "loss", "advantage_abs"):
        assert key in row, key
    assert row["advantage_abs"] > 0
    request = EditRequest(Image.new("RGB", (32, 32), "white"), "add a red circle", seed=0)
    base = np.asarray(FlowEditor(tiny_backbone(), sampler="euler", steps=2).edit([request])[0].image, float)
    refined_editor = MultiTurnRefiner(result.lora_path)(FlowEditor(tiny_backbone(), sampler="euler", steps=2))
    refined = np.asarray(refined_editor.edit([request])[0].image, float)
    assert np.abs(refined - base).mean() > 0  # the LoRA is loaded and changes the edit


def test_a_resume_with_another_learning_rate_is_refused(tmp_path):
    from refine.errors import ConfigError

    train(_config(tmp_path, 1), backbone=tiny_backbone(), rewards=_rewards())
    with pytest.raises(ConfigError, match="optim.lr"):
        train(_config(tmp_path, 2, "optim.lr=5e-3"), backbone=tiny_backbone(), rewards=_rewards())


def test_cli_is_registered_and_bad_configs_exit_2_with_one_line(tmp_path, capsys):
    assert "--config" in CliRunner().invoke(app, ["train", "multiturn", "--help"]).output
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout:\n  turns: 0\n")
    with pytest.raises(SystemExit) as info:
        main(["train", "multiturn", "--config", str(bad)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert info.value.code == 2 and len(err) == 1 and "rollout.turns" in err[0]


def test_grpo_replays_the_rollout_its_first_ratio_is_one_and_later_epochs_clip(tmp_path):
    grpo = ["objective.kind=grpo", "rollout.sampler=sde", "rollout.steps=3", "objective.grpo_kl_weight=0.04"]
    first = train(_config(tmp_path / "one", 1, *grpo, "train.gradient_accumulation=0"), backbone=tiny_backbone(), rewards=_rewards())
    row = first.metrics[-1]
    # one optimizer step after every sample was seen: the recomputed log-probs are the rollout's,
    # up to the batch composition's float rounding (rollout chunks vs training micro-batches)
    assert row["optimizer_steps"] == 1 and row["ratio_deviation"] < 1e-5 and row["clipped_fraction"] == 0.0
    moved = train(_config(tmp_path / "two", 1, *grpo, "train.inner_epochs=2", "optim.lr=0.3"), backbone=tiny_backbone(), rewards=_rewards())
    assert moved.metrics[-1]["ratio_deviation"] > 1e-4 and moved.metrics[-1]["clipped_fraction"] > 0  # epoch 2 leaves [1-ε, 1+ε]


def test_grpo_needs_sde_rollouts():
    from refine.errors import ConfigError

    with pytest.raises(ConfigError, match="rollout.sampler=sde"):
        load_config(MultiTurnConfig, overrides=["objective.kind=grpo"])


def test_cfg_free_rollouts_sample_the_conditional_policy(tmp_path):
    guided = train(_config(tmp_path / "guided", 1, "eval.benchmark=null"), backbone=tiny_backbone(), rewards=_rewards())
    free = train(_config(tmp_path / "free", 1, "eval.benchmark=null", "rollout.cfg=free"), backbone=tiny_backbone(), rewards=_rewards())
    keys = ("train_if_t1", "train_cc_t1", "train_if_t2")
    assert [guided.metrics[-1][k] for k in keys] != [free.metrics[-1][k] for k in keys]  # the tiny editor's CFG is 2
