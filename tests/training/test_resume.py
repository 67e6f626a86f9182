"""A resume refuses a changed config with one line, accepts the safe fields and records them."""

import json

import pytest

from refine.errors import ConfigError
from refine.training.resume import HISTORY, check_resume_config

SAVED = "optim:\n  lr: 0.001\nlora:\n  rank: 4\ntrain:\n  iterations: 4\nlog:\n  every: 1\n"


def test_a_changed_config_is_refused_with_every_changed_field_on_one_line(tmp_path):
    (tmp_path / "config.yaml").write_text(SAVED)
    new = SAVED.replace("lr: 0.001", "lr: 0.003").replace("rank: 4", "rank: 8")
    with pytest.raises(ConfigError) as caught:
        check_resume_config(tmp_path, new, safe=["train.iterations", "log.*"])
    message = str(caught.value)
    assert "\n" not in message
    assert "lora.rank 4 -> 8" in message and "optim.lr 0.001 -> 0.003" in message
    assert (tmp_path / "config.yaml").read_text() == SAVED  # never rewritten
    assert not (tmp_path / HISTORY).exists()


def test_safe_fields_are_applied_and_recorded(tmp_path):
    (tmp_path / "config.yaml").write_text(SAVED)
    new = SAVED.replace("iterations: 4", "iterations: 9").replace("every: 1", "every: 5")
    changes = check_resume_config(tmp_path, new, safe=["train.iterations", "log.*"], progress=("train.iterations", 4))
    assert changes == {"log.every": (1, 5), "train.iterations": (4, 9)}
    assert (tmp_path / "config.yaml").read_text() == new
    recorded = json.loads((tmp_path / HISTORY).read_text().splitlines()[-1])
    assert recorded["changes"] == {"log.every": [1, 5], "train.iterations": [4, 9]}


def test_fewer_iterations_than_done_is_an_error_that_says_so(tmp_path):
    (tmp_path / "config.yaml").write_text(SAVED)
    with pytest.raises(ConfigError, match="train.iterations=2 but the run .* has already done 3"):
        check_resume_config(tmp_path, SAVED.replace("iterations: 4", "iterations: 2"), safe=["train.iterations"],
                            progress=("train.iterations", 3))
    # the same length as done is fine: nothing left to do
    assert check_resume_config(tmp_path, SAVED, safe=["train.iterations"], progress=("train.iterations", 4)) == {}


def test_a_run_without_saved_config_has_nothing_to_compare(tmp_path):
    assert check_resume_config(tmp_path, SAVED.replace("rank: 4", "rank: 8")) == {}
