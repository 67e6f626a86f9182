import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import Field

import refine
from refine.cli import main
from refine.config import RefineConfig
from refine.registry import registry


class DemoConfig(RefineConfig):
    steps: int = Field(10, description="optimizer steps")
    lr: float = Field(1e-3, description="learning rate")


@pytest.fixture
def demo_preset(tmp_path):
    registry.register("config", "demo", DemoConfig)
    folder = tmp_path / "demo"
    folder.mkdir()
    path = folder / "small.yaml"
    path.write_text("# refine config show this-file\nsteps: 3\n")
    return path


def run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def test_version(capsys):
    main(["--version"])
    assert capsys.readouterr().out.strip() == f"refine {refine.__version__}"


def test_config_show_resolves_defaults_and_overrides(demo_preset, capsys):
    main(["config", "show", str(demo_preset), "lr=0.5"])
    out = capsys.readouterr().out
    assert "steps: 3" in out and "lr: 0.5" in out


def test_bad_config_prints_one_line_and_exits_2(demo_preset, capsys):
    code, out, err = run(["config", "validate", str(demo_preset), "stepz=4"], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown key 'stepz' (did you mean 'steps'?)" in lines[0]
    assert "Traceback" not in err


def test_debug_flag_shows_the_exception(demo_preset):
    from refine.errors import ConfigError

    with pytest.raises(ConfigError):
        main(["--debug", "config", "validate", str(demo_preset), "stepz=4"])


def test_unknown_preset_and_unknown_kind(tmp_path, capsys):
    code, _, err = run(["config", "show", "no/such/preset"], capsys)
    assert code == 2 and "no config file or preset named 'no/such/preset'" in err
    orphan = tmp_path / "orphans" / "x.yaml"
    orphan.parent.mkdir()
    orphan.write_text("a: 1\n")
    code, _, err = run(["config", "show", str(orphan)], capsys)
    assert code == 2 and "pass --kind" in err


def test_console_script_exit_code_without_traceback(tmp_path):
    missing = tmp_path / "missing.yaml"
    proc = subprocess.run(
        [sys.executable, "-c", "from refine.cli import main; main()", "config", "show", str(missing), "--kind", "x.y:Z"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "missing.yaml" in proc.stderr


def _console_script() -> str:
    """The installed `refine` script of this interpreter (what a user types), not `python -c`."""
    script = Path(sys.executable).with_name("refine")
    assert script.exists(), f"the refine console script is not installed next to {sys.executable}"
    return str(script)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # Only what the user typed is checked: click's own wording differs between releases.
        (["config", "show"], "preset"),
        (["train", "base", "--config"], "--config"),
        (["edit", "--no-such-option"], "--no-such-option"),
        (["shapes", "show", "--n", "abc"], "--n"),
        (["no-such-command"], "no-such-command"),
    ],
    ids=["missing-argument", "missing-option-value", "unknown-option", "bad-value", "unknown-command"],
)
def test_usage_errors_through_the_console_script_are_one_line_exit_2(argv, expected):
    proc = subprocess.run([_console_script(), *argv], capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert "--help" in lines[0]  # it says where to look


@pytest.mark.parametrize("argv", [[], ["config"], ["train"]], ids=["bare", "config", "train"])
def test_a_group_without_a_command_prints_its_help_and_exits_2(argv):
    proc = subprocess.run([_console_script(), *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip() == ""
    assert "Usage: refine" in proc.stdout and "Commands" in proc.stdout


def test_short_help_flag_prints_help():
    proc = subprocess.run([_console_script(), "-h"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Usage: refine" in proc.stdout
    proc = subprocess.run([_console_script(), "config", "show", "-h"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Usage: refine config show" in proc.stdout
