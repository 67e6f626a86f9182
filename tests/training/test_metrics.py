"""The metrics logger: JSONL rows, resume truncation by step key, wandb when asked."""

import sys
import types

import pytest

from refine.errors import ConfigError
from refine.training.metrics import WANDB_ID, MetricsLogger, read_metrics


def test_resume_drops_rows_past_the_checkpoint_and_a_fresh_run_starts_empty(tmp_path):
    with MetricsLogger(tmp_path, step_key="step") as log:
        for step in range(1, 6):
            log.write({"step": step, "loss": 1.0 / step, "eval": {"overall": 0.5}})
    resumed = MetricsLogger(tmp_path, step_key="step")
    resumed.resume_at(3)
    assert [row["step"] for row in read_metrics(tmp_path)] == [1, 2, 3]
    assert read_metrics(tmp_path)[0]["eval"] == {"overall": 0.5}
    resumed.resume_at(None)
    assert read_metrics(tmp_path) == []


def test_wandb_gets_the_numbers_and_a_resume_continues_the_same_run(tmp_path, monkeypatch):
    calls = []

    class Run:
        def log(self, numbers, step):
            calls.append(("log", numbers, step))

        def finish(self):
            calls.append(("finish",))

    fake = types.SimpleNamespace(
        init=lambda **kwargs: calls.append(("init", kwargs["id"], kwargs["project"])) or Run(),
        util=types.SimpleNamespace(generate_id=lambda: "run-1"),
    )
    monkeypatch.setitem(sys.modules, "wandb", fake)
    with MetricsLogger(tmp_path, wandb_project="p") as log:
        log.write({"iteration": 2, "reward_mean": 0.5, "eval": {"overall": 0.25}, "note": "x"})
    fake.util.generate_id = lambda: "run-2"  # a resume must not start another run
    MetricsLogger(tmp_path, wandb_project="p").close()
    assert calls == [("init", "run-1", "p"), ("log", {"reward_mean": 0.5, "eval/overall": 0.25}, 2), ("finish",),
                     ("init", "run-1", "p"), ("finish",)]
    assert (tmp_path / WANDB_ID).read_text().strip() == "run-1"


def test_wandb_asked_but_not_installed_says_how_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails
    with pytest.raises(ConfigError, match="pip install wandb"):
        MetricsLogger(tmp_path, wandb_project="p")
