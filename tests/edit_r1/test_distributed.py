"""Two processes (torchrun, gloo on CPU) run one Edit-R1 iteration in lockstep."""

import json
import os
import shutil
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_two_processes_share_the_batch_and_end_with_identical_weights(tmp_path):
    torchrun = shutil.which("torchrun") or f"{sys.executable} -m torch.distributed.run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    command = [*torchrun.split(), "--standalone", "--nproc_per_node", "2", "-m", "refine.testing.edit_r1",
               "--output", str(tmp_path), "--iterations", "1", "--checkpoint-every", "1"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"result-rank{r}.json").read_text()) for r in (0, 1)]
    # Each process rolled out its own half of the iteration's groups (2 groups -> one each) ...
    assert ranks[0]["requests"] == [["train-0-0"]] and ranks[1]["requests"] == [["train-0-1"]]
    # ... and after the synchronised update both hold the same, changed, weights.
    assert ranks[0]["digest"] == ranks[1]["digest"]
    assert ranks[0]["lora_b_abs_sum"] > 0
