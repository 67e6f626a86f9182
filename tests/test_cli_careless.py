"""Section 2 of issue 21: the command line as a careless user meets it.

Each case ends in one line on stderr and exit code 2, before any compute, nothing lost.
"Not writable" is simulated in ways root respects (the suite runs as root, which ignores
permission bits): a path under a regular file (ENOTDIR) and a path under /sys (sysfs refuses new
files to everyone; skipped where /sys accepts them).
"""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from refine.cli import main

SYS_UNWRITABLE = Path("/sys/refine-test-output")


def _sys_refuses_writes() -> bool:
    if not Path("/sys").is_dir():
        return False
    try:
        (Path("/sys") / ".refine-probe").touch()
    except OSError:
        return True
    (Path("/sys") / ".refine-probe").unlink()
    return False


def _run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    captured = capsys.readouterr()
    return info.value.code, captured.err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a folder")
    return path


# -- output paths: checked before any compute ---------------------------------------------------


def _bad_outputs(tmp_path, a_file):
    return {"existing-file": a_file, "under-a-file": a_file / "sub" / "out", "folder": tmp_path}


def _no_compute(*args, **kwargs):
    raise AssertionError("compute started before the output path was checked")


@pytest.mark.parametrize("kind", ["folder", "under-a-file", "unwritable"])
def test_edit_checks_out_before_loading_the_model(kind, tmp_path, a_file, capsys, monkeypatch):
    import refine.backbones

    if kind == "unwritable" and not _sys_refuses_writes():
        pytest.skip("no read-only /sys here")
    monkeypatch.setattr(refine.backbones, "load_backbone", _no_compute)
    folder = tmp_path / "existing.png"  # a folder that looks like an image path
    folder.mkdir()
    out = {"folder": folder, "under-a-file": a_file / "out.png", "unwritable": SYS_UNWRITABLE / "out.png"}[kind]
    source = tmp_path / "in.png"
    source.write_bytes(b"")  # never read: the output is checked first
    code, err = _run(["edit", "--backbone", "shapes", "--image", str(source), "--instruction", "add a dot", "--out", str(out)], capsys)
    assert code == 2
    assert _one_error_line(err).startswith("error: --out")


@pytest.mark.parametrize("kind", ["existing-file", "under-a-file"])
def test_compare_checks_out_dir_before_any_compute(kind, tmp_path, a_file, capsys, monkeypatch):
    import refine.compare.runner as runner

    monkeypatch.setattr(runner, "build_benchmark", _no_compute)
    out = _bad_outputs(tmp_path, a_file)[kind]
    code, err = _run(["compare", "limit=2", f"out_dir={out}", "progress=false"], capsys)
    assert code == 2
    assert "error: out_dir" in _one_error_line(err) and "is a file, not a folder" in err


@pytest.mark.parametrize(
    ("command", "module", "function", "key"),
    [
        (["train", "base", "--config", "base/shapes"], "refine.backbones.train_base", "train", "output_dir"),
        (["train", "edit-r1", "--config", "edit_r1/shapes"], "refine.edit_r1.train", "train", "log.output_dir"),
        (["train", "inline-critic", "--config", "inline_critic/shapes"], "refine.inline_critic.train", "train_inline_critic", "output_dir"),
    ],
    ids=["base", "edit-r1", "inline-critic"],
)
@pytest.mark.parametrize("kind", ["existing-file", "under-a-file"])
def test_train_checks_output_dir_before_any_compute(command, module, function, key, kind, tmp_path, a_file, capsys, monkeypatch):
    monkeypatch.setattr(importlib.import_module(module), function, _no_compute)
    out = _bad_outputs(tmp_path, a_file)[kind]
    code, err = _run([*command, f"{key}={out}"], capsys)
    assert code == 2, err
    assert _one_error_line(err).startswith(f"error: {key} ") and "is a file, not a folder" in err


TRAIN = [
    (["train", "base"], "refine.backbones.train_base", "train"),
    (["train", "edit-r1"], "refine.edit_r1.train", "train"),
    (["train", "inline-critic"], "refine.inline_critic.train", "train_inline_critic"),
]
TRAIN_IDS = ["base", "edit-r1", "inline-critic"]


# -- a missing required option, through the installed script ------------------------------------


def test_shapes_judge_without_case_is_one_line_exit_2():
    script = Path(sys.executable).with_name("refine")
    proc = subprocess.run([str(script), "shapes", "judge", "--edited", "x.png"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "--case" in _one_error_line(proc.stderr)


# -- presets by name -----------------------------------------------------------------------------


@pytest.mark.parametrize(("command", "module", "function"), TRAIN, ids=TRAIN_IDS)
def test_train_accepts_a_preset_name(command, module, function, tmp_path, capsys, monkeypatch):
    seen = {}

    class Stop(Exception):
        pass

    def fake_train(config, **kwargs):
        seen["config"] = config
        raise Stop

    monkeypatch.setattr(importlib.import_module(module), function, fake_train)
    preset = command[1].replace("-", "_") + "/shapes"
    key = "log.output_dir" if command[1] == "edit-r1" else "output_dir"
    with pytest.raises(Stop):
        main([*command, "--config", preset, f"{key}={tmp_path / 'run'}"])
    config = seen["config"]
    out = config.log.output_dir if command[1] == "edit-r1" else config.output_dir
    assert out == str(tmp_path / "run")
    if command[1] == "edit-r1":
        assert config.train.iterations == 30 and config.optim.lr == 3e-3  # the preset's numbers, not the defaults


# -- a config file that sets nothing -------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"], ids=["empty", "comment", "empty-mapping"])
@pytest.mark.parametrize(("command", "module", "function"), TRAIN, ids=TRAIN_IDS)
def test_a_config_file_that_sets_nothing_is_refused(command, module, function, text, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(importlib.import_module(module), function, _no_compute)
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    code, err = _run([*command, "--config", str(path)], capsys)
    assert code == 2
    line = _one_error_line(err)
    assert "empty.yaml" in line and "sets nothing" in line


# -- component kinds -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "override", "expected"),
    [
        ("edit_r1/shapes", "reward.kind=nope", "reward.kind: unknown reward kind 'nope'"),
        ("edit_r1/shapes", "reward.rewards.if.kind=shapes_iff", "reward.rewards.if.kind: unknown reward kind 'shapes_iff'; did you mean 'shapes_if'?"),
        ("edit_r1/shapes", "backbone.kind=shape", "backbone.kind: unknown backbone kind 'shape'; did you mean 'shapes'?"),
        ("edit_r1/shapes", "reward={kind: mllm, backend: {kind: opnai}}", "reward.backend.kind: unknown vlm_backend kind 'opnai'; did you mean 'openai'?"),
        ("inline_critic/shapes", "backbone.kind=qwen_image_edt", "did you mean 'qwen_image_edit'?"),
        ("compare/shapes", "entries.+thinker.refiners=[thinkr]", "entry '+thinker': refiners[0].kind: unknown refiner kind 'thinkr'; did you mean 'thinker'?"),
        ("compare/shapes", "benchmark=shapes-bnch", "did you mean 'shapes-bench'?"),
    ],
)
def test_config_validate_checks_component_kinds(preset, override, expected, capsys):
    code, err = _run(["config", "validate", preset, override], capsys)
    assert code == 2
    assert expected in _one_error_line(err)


def test_a_dotted_import_path_is_still_a_valid_kind(capsys):
    main(["config", "validate", "edit_r1/shapes", "reward.kind=my_package.rewards:MyReward"])
    assert capsys.readouterr().out.startswith("ok")


# -- YAML syntax errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("backbone:\n  kind: shapes\n   path: x\n", "line 3, column 8"),  # a key indented one space too far
        ("train:\n  iterations: [1, 2\nlog: {}\n", "line 3, column 4"),   # an unclosed list
        ("train:\n\titerations: 3\n", "line 2, column 1"),                # a tab
    ],
    ids=["indent", "unclosed", "tab"],
)
def test_yaml_syntax_errors_name_file_line_and_column(text, where, tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    code, err = _run(["config", "validate", str(path), "--kind", "edit_r1"], capsys)
    assert code == 2
    line = _one_error_line(err)
    assert f"broken.yaml, {where}: invalid YAML: " in line
    if "\t" in text:
        assert "tab" in line.split("invalid YAML: ", 1)[1]
