"""Atomic checkpoints: complete or absent, `latest` always names a complete one."""

import pytest
import torch

from refine.training.checkpoint import CheckpointWriter, latest_checkpoint, list_checkpoints, read_json, read_tensors
from refine.errors import ArtifactError


def write(out, step, value, keep_last=None):
    with CheckpointWriter(out, step, keep_last=keep_last) as ckpt:
        ckpt.save_tensors("trained", {"w": torch.full((2,), float(value))})
        ckpt.save_json("state", {"iteration": step})


def test_latest_and_rotation(tmp_path):
    for step in (1, 2, 3):
        write(tmp_path, step, step, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-000002", "checkpoint-000003"]
    assert latest_checkpoint(tmp_path).name == "checkpoint-000003"
    assert read_tensors(latest_checkpoint(tmp_path), "trained")["w"].tolist() == [3.0, 3.0]


def test_a_failure_while_writing_publishes_nothing(tmp_path):
    write(tmp_path, 1, 1.0)
    with pytest.raises(RuntimeError):
        with CheckpointWriter(tmp_path, 2) as ckpt:
            ckpt.save_tensors("trained", {"w": torch.zeros(2)})
            raise RuntimeError("killed while writing")
    assert latest_checkpoint(tmp_path).name == "checkpoint-000001"
    assert not (tmp_path / "checkpoint-000002").exists() and not list(tmp_path.glob(".tmp-*"))


def test_half_written_folders_are_never_trusted(tmp_path):
    write(tmp_path, 1, 1.0)
    # What a SIGKILL during the write leaves: a temporary folder, or a folder without COMPLETE.
    (tmp_path / ".tmp-checkpoint-000002").mkdir()
    (tmp_path / "checkpoint-000003").mkdir()
    (tmp_path / "latest").write_text("checkpoint-000003\n")
    assert latest_checkpoint(tmp_path).name == "checkpoint-000001"
    write(tmp_path, 2, 2.0)  # a resumed run rewrites step 2 over the leftovers
    assert latest_checkpoint(tmp_path).name == "checkpoint-000002"
    assert read_json(latest_checkpoint(tmp_path), "state") == {"iteration": 2}


def test_missing_parts_are_artifact_errors(tmp_path):
    write(tmp_path, 1, 1.0)
    with pytest.raises(ArtifactError, match="has no optimizer.safetensors"):
        read_tensors(latest_checkpoint(tmp_path), "optimizer")
    assert latest_checkpoint(tmp_path / "nowhere") is None


def test_rng_state_restores_global_and_named_generators():
    import random

    import numpy as np

    from refine.training.checkpoint import rng_state, set_rng_state

    noise = torch.Generator().manual_seed(5)
    state = rng_state({"noise": noise})
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)), float(torch.rand(1, generator=noise)))
    set_rng_state(state, {"noise": noise})
    assert (random.random(), float(np.random.rand()), float(torch.rand(1)), float(torch.rand(1, generator=noise))) == first
    with pytest.raises(ArtifactError, match="no generator 'data'"):
        set_rng_state(state, {"data": torch.Generator()})


def test_single_files_are_replaced_atomically(tmp_path):
    from safetensors.torch import load_file

    from refine.training.checkpoint import save_tensors_atomic

    path = save_tensors_atomic(tmp_path / "w.safetensors", {"w": torch.ones(2)}, {"format": "x"})
    save_tensors_atomic(path, {"w": torch.zeros(2)})
    assert load_file(str(path))["w"].tolist() == [0.0, 0.0] and [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]
