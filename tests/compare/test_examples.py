"""The three example scripts run in their quick mode (the way people use refine from Python)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(script: str, *args: str, cwd: Path) -> str:
    # one thread: the test workers already share the 2 cores (more threads only spin and wait)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--quick", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_compose_refiners_example(tmp_path):
    out = _run("compose_refiners.py", cwd=tmp_path)
    assert "refused as expected" in out and "needs a white-box" in out
    assert out.count("judge overall: editor alone") == 2
    # the composed editor's trace: the thinker's edits and the expert's critiques, with the bundled LoRA in
    assert "  edit   thinker " in out and "  think  shape-expert " in out
    assert "no bundled Edit-R1 LoRA" not in out


@pytest.mark.slow
def test_compare_strategies_example(tmp_path):
    out = _run("compare_strategies.py", "--out", str(tmp_path / "cmp"), cwd=tmp_path)
    assert "best deployable entry:" in out and (tmp_path / "cmp" / "report.html").is_file()
    assert "+thinker-1turn" in (tmp_path / "cmp" / "summary.md").read_text()


@pytest.mark.slow
def test_train_strategy_example(tmp_path):
    out = _run("train_strategy.py", "--out", str(tmp_path / "r1"), cwd=tmp_path)
    assert "trained 1 iteration(s)" in out and "LoRA:" in out
    summary = (tmp_path / "r1" / "compare" / "summary.md").read_text()
    assert "+my_edit_r1" in summary
