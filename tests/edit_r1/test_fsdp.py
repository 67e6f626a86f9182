"""Edit-R1 under accelerate FSDP2 (`fully_shard`) on CPU: two torchrun processes over gloo.

Each run is the tiny ShapeEdit editor for 3 iterations (checkpoints at 2 and 3; the old policy
lags the trained one from iteration 2 on, old_decay 0.3 then 0.5, so that a swap that did not
reach the weights a forward uses would show), launched the way a user launches it, with
accelerate's FSDP variables in the environment (what `accelerate launch --config_file
examples/accelerate/edit_r1_fsdp2.yaml` sets). The EMA is evaluated on one held-out case before
and after training: one process has none, and evaluates a padding request in lockstep (every
FSDP2 forward is a collective). The unsharded reference is
the same two-process run under DDP: same seeds, same data split, same per-process noise, so
the only difference is where the gradients are reduced and the weights are kept.

Tolerance of "same weights": 1e-6 absolute in fp32. Measured differences between the FSDP2 and
DDP runs were 2e-9 (LoRA) and 1.2e-7 (full fine-tuning): the reduce-scatter sums in another
order than DDP's all-reduce, which moves the last bits, and AdamW carries them on.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch
from safetensors.torch import load_file

from refine.backbones.shapes import build_shapes_backbone  # noqa: F401  (the torchvision shim, before diffusers)
from refine.testing.edit_r1 import read_checkpoint_policies, tiny_backbone
from refine.training.checkpoint import latest_checkpoint
from refine.training.lora import LORA_WEIGHT_NAME, load_lora

TOLERANCE = 1e-6  # fp32, absolute (module docstring)
FSDP_ENV = {
    "ACCELERATE_USE_FSDP": "true",
    "FSDP_VERSION": "2",
    "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",  # one fully_shard per QwenImageTransformerBlock
    "FSDP_RESHARD_AFTER_FORWARD": "true",
}


def _command(out, *args):
    torchrun = shutil.which("torchrun") or f"{sys.executable} -m torch.distributed.run"
    return [*torchrun.split(), "--standalone", "--nproc_per_node", "2", "-m", "refine.testing.edit_r1",
            "--output", str(out), "--iterations", "3", "--checkpoint-every", "2", "--old-decay-rate", "0.3",
            "--eval-cases", "1", *args]


def _env(sharded):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    for key in FSDP_ENV:
        env.pop(key, None)
    return {**env, **FSDP_ENV} if sharded else env


def _run(out, sharded, *args):
    done = subprocess.run(_command(out, *args), env=_env(sharded), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"result-rank{r}.json").read_text()) for r in (0, 1)]


def _max_difference(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).detach().abs().max()) for k in a)


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp-lora")
    return {"ddp": (root / "ddp", _run(root / "ddp", False)), "fsdp": (root / "fsdp", _run(root / "fsdp", True))}


@pytest.mark.slow(minutes=1.5)
def test_sharded_lora_run_equals_the_unsharded_run(lora_runs):
    (ddp, _), (fsdp, ranks) = lora_runs["ddp"], lora_runs["fsdp"]
    # The sharded checkpoint is a distributed checkpoint (a shard per process), not safetensors.
    final = latest_checkpoint(fsdp)
    assert (final / "policies" / ".metadata").is_file() and not (final / "trained.safetensors").exists()
    assert (final / "optimizer" / ".metadata").is_file()
    sharded, replicated = read_checkpoint_policies(final), read_checkpoint_policies(latest_checkpoint(ddp))
    for policy in ("trained", "old", "ema"):
        assert _max_difference(sharded[policy], replicated[policy]) < TOLERANCE, policy
    # The held-out evaluation (before and after training) agrees too.
    (ddp_ranks, fsdp_ranks) = lora_runs["ddp"][1], ranks
    assert [i for i, _ in fsdp_ranks[0]["eval_history"]] == [0, 3]
    assert all(abs(a[1] - b[1]) < TOLERANCE for a, b in zip(fsdp_ranks[0]["eval_history"], ddp_ranks[0]["eval_history"]))
    # Training moved the weights (LoRA B starts at 0), and both processes hold the same full weights.
    assert ranks[0]["lora_b_abs_sum"] > 0
    assert ranks[0]["digest"] == ranks[1]["digest"]


@pytest.mark.slow(minutes=0.5)
def test_sharded_lora_export_loads_in_diffusers_and_equals_the_unsharded_export(lora_runs):
    (ddp, _), (fsdp, _) = lora_runs["ddp"], lora_runs["fsdp"]
    sharded, replicated = load_file(str(fsdp / "lora" / LORA_WEIGHT_NAME)), load_file(str(ddp / "lora" / LORA_WEIGHT_NAME))
    # Every matrix whole (a rank-0-only save would hold half of each sharded dimension) and equal.
    assert {k: v.shape for k, v in sharded.items()} == {k: v.shape for k, v in replicated.items()}
    assert _max_difference(sharded, replicated) < TOLERANCE
    # Round trip: diffusers' loader puts exactly the exported values into a fresh transformer.
    fresh = tiny_backbone().transformer
    load_lora(fresh, fsdp / "lora", adapter_name="edit_r1")
    loaded = {name: p for name, p in fresh.named_parameters() if ".lora_" in name}
    assert len(loaded) == len(sharded)
    for key, value in sharded.items():
        name = key.removeprefix("transformer.").replace(".weight", ".edit_r1.weight")
        assert torch.equal(loaded[name].detach(), value), key


@pytest.mark.slow(minutes=2)
def test_sigkill_and_resume_under_sharding_is_exact(lora_runs, tmp_path):
    straight, straight_ranks = lora_runs["fsdp"]
    killed = tmp_path / "killed"
    # Rank 0 also scores the held-out case before training: its reward blocks on its 4th call, in
    # iteration 3 after checkpoint 2; rank 1 then waits for it in the next collective.
    process = subprocess.Popen(_command(killed, "--hang-after", "3"), env=_env(True), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)
    workers = []
    try:
        deadline = time.monotonic() + 600
        while latest_checkpoint(killed) is None:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 600 s"
            time.sleep(0.2)
        time.sleep(1.0)  # both processes past the checkpoint's last barrier
    finally:
        # torchrun starts each worker in a session of its own: kill the workers by pid, then torchrun
        with contextlib.suppress(psutil.NoSuchProcess):
            workers = psutil.Process(process.pid).children(recursive=True)
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.send_signal(signal.SIGKILL)
        process.kill()
        process.wait()
    assert latest_checkpoint(killed).name == "checkpoint-000002"

    resumed_ranks = _run(killed, True)
    assert [r["digest"] for r in resumed_ranks] == [r["digest"] for r in straight_ranks]
    a, b = read_checkpoint_policies(latest_checkpoint(killed)), read_checkpoint_policies(latest_checkpoint(straight))
    for policy in ("trained", "old", "ema"):
        assert all(torch.equal(a[policy][k], b[policy][k]) for k in a[policy]), policy
    lines = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == [0, 1, 2, 3]  # 0: the evaluation before training
    assert [r.get("reward_mean") for r in lines] == [r.get("reward_mean") for r in reference]
    assert [r.get("eval_reward") for r in lines] == [r.get("eval_reward") for r in reference]


@pytest.mark.slow(minutes=1.5)
def test_sharded_full_finetune_with_sharded_text_encoder_checkpointing_and_accumulation_equals_ddp(tmp_path):
    from diffusers import QwenImageTransformer2DModel

    # micro-batch 2 of a process's 4 samples: two backward passes per optimizer step (FSDP2 defers
    # the reduce-scatter to the second, as DDP defers its all-reduce)
    _run(tmp_path / "ddp", False, "--finetune", "full", "--micro-batch", "2")
    _run(tmp_path / "fsdp", True, "--finetune", "full", "--micro-batch", "2", "--frozen", "shard", "--gradient-checkpointing")
    sharded = read_checkpoint_policies(latest_checkpoint(tmp_path / "fsdp"))
    replicated = read_checkpoint_policies(latest_checkpoint(tmp_path / "ddp"))
    for policy in ("trained", "old", "ema"):
        assert _max_difference(sharded[policy], replicated[policy]) < TOLERANCE, policy
    initial = dict(tiny_backbone().transformer.named_parameters())
    assert max(float((sharded["trained"][k] - initial[k]).abs().max()) for k in initial) > 1e-4  # it trained
    # The exported transformer folder (gathered, written by the main process) loads with diffusers.
    exported = QwenImageTransformer2DModel.from_pretrained(tmp_path / "fsdp" / "transformer").state_dict()
    reference = QwenImageTransformer2DModel.from_pretrained(tmp_path / "ddp" / "transformer").state_dict()
    assert _max_difference(exported, reference) < TOLERANCE


@pytest.mark.slow(minutes=1)
def test_sharded_flow_grpo_run_equals_ddp(tmp_path):
    # Flow-GRPO replays recorded SDE steps under dropout_off and swaps the old policy in for them.
    ddp = _run(tmp_path / "ddp", False, "--objective", "grpo")
    fsdp = _run(tmp_path / "fsdp", True, "--objective", "grpo")
    sharded = read_checkpoint_policies(latest_checkpoint(tmp_path / "fsdp"))
    replicated = read_checkpoint_policies(latest_checkpoint(tmp_path / "ddp"))
    for policy in ("trained", "old", "ema"):
        assert _max_difference(sharded[policy], replicated[policy]) < TOLERANCE, policy
    assert fsdp[0]["lora_b_abs_sum"] > 0 and fsdp[0]["digest"] == fsdp[1]["digest"]
    assert [r[1] for r in fsdp[0]["eval_history"]] == pytest.approx([r[1] for r in ddp[0]["eval_history"]], abs=TOLERANCE)
