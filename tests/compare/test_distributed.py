"""`refine compare` over two processes (torchrun, gloo on CPU) on the toy world: the same report as one process."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from refine.testing.compare_fakes import toy_config

CASES = 10  # batch_size 3: four batches, dealt 2 / 2, the last one short


def _compare(config_file, processes, **env):
    launcher = ([*(shutil.which("torchrun") or f"{sys.executable} -m torch.distributed.run").split(), "--standalone",
                 "--nproc_per_node", str(processes)] if processes > 1 else [sys.executable])
    return subprocess.run([*launcher, "-m", "refine", "compare", str(config_file)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", **env})


def _config(tmp_path, name):
    file = tmp_path / f"{name}.yaml"
    file.write_text(yaml.safe_dump(toy_config(tmp_path / name, cases=CASES, seeds=[0, 1])))
    return file


def _report(out):
    """The summary rows and the per-case rows, without timings and cache counts (what may differ)."""
    summary = json.loads((out / "summary.json").read_text())["summary"]
    cases = [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]
    for row in summary:
        row.pop("seconds_per_case")
    for row in cases:
        row.pop("seconds")
        for turn in row["turns"]:
            turn.pop("seconds")
    return summary, sorted(cases, key=lambda r: (r["entry"], r["case_id"], r["seed"]))


@pytest.mark.slow(minutes=1)
def test_two_processes_write_the_same_report_as_one_and_a_rerun_finishes_a_dead_ranks_cases(tmp_path):
    single = _compare(_config(tmp_path, "single"), 1)
    assert single.returncode == 0, single.stderr[-3000:]

    # Rank 1 dies at its 2nd editor call: its first batch is cached, the one in flight is lost.
    config = _config(tmp_path, "pair")
    dead = _compare(config, 2, REFINE_TOY_DIE="1:1")
    assert dead.returncode != 0 and not (tmp_path / "pair" / "summary.json").exists()
    cached = len(list((tmp_path / "pair" / "cache").rglob("*.png")))
    assert 0 < cached < 2 * CASES * 2  # two entries x ten cases x two seeds when complete

    calls = tmp_path / "calls.txt"
    rerun = _compare(config, 2, REFINE_TOY_CALLS=str(calls))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _report(tmp_path / "pair") == _report(tmp_path / "single")
    # the two processes shared the missing edits: each edited some, none was edited twice
    edits = [line.split() for line in calls.read_text().splitlines()]
    assert {rank for rank, _ in edits} == {"0", "1"}
    assert len(edits) == 2 * CASES * 2 - cached
