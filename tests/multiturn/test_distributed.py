"""Two processes (torchrun, gloo on CPU) train MT-EditFlow in lockstep, each on its own groups."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from refine.multiturn.rewards import TurnRewards
from refine.multiturn.train import train
from refine.testing.edit_r1 import brightness_reward, tiny_backbone
from refine.testing.multiturn import RecordingReward, pixel_consistency, tiny_config


@pytest.mark.slow(minutes=2)
@pytest.mark.parametrize("objective", ["nft", "grpo"])
def test_two_processes_split_the_groups_gather_the_rewards_and_stay_in_sync(tmp_path, objective):
    torchrun = shutil.which("torchrun") or f"{sys.executable} -m torch.distributed.run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    out = tmp_path / "ddp"
    command = [*torchrun.split(), "--standalone", "--nproc_per_node", "2", "-m", "refine.testing.multiturn",
               "--output", str(out), "--iterations", "2", "--objective", objective]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((out / f"result-rank{r}.json").read_text()) for r in (0, 1)]
    # Each process rolled out one of the iteration's two sequences (G x K scores each, disjoint) ...
    seen = [set(r["instructions"]) for r in ranks]
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    # ... and after the synchronised updates both hold the same, trained, weights.
    assert ranks[0]["digest"] == ranks[1]["digest"]
    assert ranks[0]["lora"] and (out / "lora" / "pytorch_lora_weights.safetensors").is_file()

    # The gathered iteration-1 metrics are those of one process rolling out both sequences: the
    # noise is keyed by the global sequence index and the gather keeps sequence order.
    torch.set_num_threads(1)
    instruction = RecordingReward(brightness_reward)
    extra = ["objective.kind=grpo", "rollout.sampler=sde"] if objective == "grpo" else []
    single = train(tiny_config(tmp_path / "single", 2, *extra), backbone=tiny_backbone(), rewards=TurnRewards(instruction, pixel_consistency))
    row = next(r for r in single.metrics if r["iteration"] == 1)
    assert set(instruction.seen) == seen[0] | seen[1]
    for key, value in ranks[0]["iteration_1"].items():
        assert row[key] == pytest.approx(value, abs=1e-6), key


def test_a_sequence_count_that_does_not_split_over_the_processes_is_refused(tmp_path):
    from types import SimpleNamespace

    from refine.errors import ConfigError

    fake = SimpleNamespace(process_index=0, num_processes=3, is_main_process=True,
                           distributed_type=SimpleNamespace(name="MULTI_CPU"))
    with pytest.raises(ConfigError, match="sequences_per_iteration=2"):
        train(tiny_config(tmp_path, 1), backbone=tiny_backbone(), rewards=TurnRewards(brightness_reward, pixel_consistency), accelerator=fake)
