"""Section 2 of issue 21: the command line as a careless user meets it.

Each case ends in one line on stderr and exit code 2, before any compute, nothing lost.
"Not writable" is simulated in ways root respects (the suite runs as root, which ignores
permission bits): a path under a regular file (ENOTDIR) and a path under /sys (sysfs refuses new
files to everyone; skipped where /sys accepts them).
"""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image
from rich.console import Console

from refine.cli import main
from refine.compare import run_compare
from refine.errors import ArtifactError, BackendError
from refine.registry import registry
from refine.testing.compare_fakes import ToyBenchmark, toy_config

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
        (["train", "base", "--config", "base/shapes"], "refine.shapes.editor_training.train", "train", "output_dir"),
        (["train", "edit-r1", "--config", "edit_r1/shapes"], "refine.edit_r1.train", "train", "log.output_dir"),
        (["train", "inline-critic", "--config", "inline_critic/shapes"], "refine.inline_critic.train", "train_inline_critic", "output_dir"),
        (["train", "multiturn", "--config", "multiturn/shapes"], "refine.multiturn.train", "train", "log.output_dir"),
    ],
    ids=["base", "edit-r1", "inline-critic", "multiturn"],
)
@pytest.mark.parametrize("kind", ["existing-file", "under-a-file"])
def test_train_checks_output_dir_before_any_compute(command, module, function, key, kind, tmp_path, a_file, capsys, monkeypatch):
    monkeypatch.setattr(importlib.import_module(module), function, _no_compute)
    out = _bad_outputs(tmp_path, a_file)[kind]
    code, err = _run([*command, f"{key}={out}"], capsys)
    assert code == 2, err
    assert _one_error_line(err).startswith(f"error: {key} ") and "is a file, not a folder" in err


TRAIN = [
    (["train", "base"], "refine.shapes.editor_training.train", "train"),
    (["train", "edit-r1"], "refine.edit_r1.train", "train"),
    (["train", "inline-critic"], "refine.inline_critic.train", "train_inline_critic"),
    (["train", "multiturn"], "refine.multiturn.train", "train"),
]
TRAIN_IDS = ["base", "edit-r1", "inline-critic", "multiturn"]


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
    logged = command[1] in ("edit-r1", "multiturn")  # their output folder is log.output_dir
    key = "log.output_dir" if logged else "output_dir"
    with pytest.raises(Stop):
        main([*command, "--config", preset, f"{key}={tmp_path / 'run'}"])
    config = seen["config"]
    out = config.log.output_dir if logged else config.output_dir
    assert out == str(tmp_path / "run")
    if command[1] == "edit-r1":
        assert config.train.iterations == 70 and config.optim.lr == 1e-3  # the preset's numbers, not the defaults


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


# -- a served thinker or judge that is down ------------------------------------------------------

DOWN_URL = "http://127.0.0.1:9/v1"
DOWN_MODULE = f'''
from refine.errors import BackendError


class DownThinker:
    name = "down"

    def think(self, requests):
        raise BackendError("{DOWN_URL}/chat/completions is unreachable (connection refused)")


def down_thinker():
    return DownThinker()
'''


@pytest.fixture
def down_thinker(tmp_path, monkeypatch):
    """An import path to a thinker whose server is down (a module written for the test)."""
    folder = tmp_path / "fakes"
    folder.mkdir()
    (folder / "refine_down_server.py").write_text(DOWN_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    return "refine_down_server:down_thinker"


def test_compare_names_the_failed_entry_and_the_server_and_reports_the_rest(down_thinker, tmp_path, capsys):
    entries = {"base": {}, "+served": {"refiners": [{"kind": "thinker", "thinker": down_thinker}]},
               "+spell": {"refiners": [{"kind": "refine.testing.compare_fakes:SpellOut"}]}}
    config = toy_config(tmp_path / "out", cases=4, entries=entries)
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    code, err = _run(["compare", str(path)], capsys)
    assert code == 2
    line = _one_error_line(err)
    assert "entry '+served'" in line and DOWN_URL in line
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["entries"] == ["base", "+spell"]  # the entry after the failed one ran too
    assert [s["entry"] for s in summary["skipped"]] == ["+served"] and DOWN_URL in summary["skipped"][0]["reason"]
    rows = [json.loads(r) for r in (tmp_path / "out" / "cases.jsonl").read_text().splitlines()]
    assert sorted({r["entry"] for r in rows}) == ["+spell", "base"] and len(rows) == 8


def test_compare_with_its_judge_down_keeps_the_report_of_the_entries_already_scored(tmp_path, monkeypatch):
    class JudgeGoesDown(ToyBenchmark):
        scored = 0

        def score(self, items):
            if JudgeGoesDown.scored >= 4:  # the first entry's 4 cases, then the server is gone
                raise BackendError(f"{DOWN_URL}/chat/completions is unreachable (connection refused)")
            JudgeGoesDown.scored += len(items)
            return super().score(items)

    monkeypatch.setitem(registry._entries["benchmark"], "judge-goes-down", JudgeGoesDown)
    config = toy_config(tmp_path / "out", cases=4, batch_size=4)
    config["benchmark"]["kind"] = "judge-goes-down"
    with pytest.raises(BackendError, match=r"entry '\+spell' failed while judging: .*127\.0\.0\.1:9") as info:
        run_compare(config, console=Console(quiet=True))
    assert "the report of the 1 entries that finished" in str(info.value)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["entries"] == ["base"]


def test_edit_with_a_thinker_that_is_down_leaves_no_empty_trace(down_thinker, shapes_dir, tmp_path, capsys):
    source = tmp_path / "in.png"
    Image.new("RGB", (32, 32), "white").save(source)
    out = tmp_path / "edit.png"
    code, err = _run(["edit", "--backbone", f"shapes:{shapes_dir}", "--image", str(source), "--instruction", "add a red circle",
                      "--out", str(out), "--steps", "1", "--thinker", down_thinker], capsys)
    assert code == 2 and DOWN_URL in _one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fakes", "in.png"]  # no edit.png, no edit.trace/


@pytest.mark.parametrize("spec", ["/no/such/checkpoint", "./no-such-checkpoint", "models/no/such"])
def test_a_local_thinker_path_that_does_not_exist_says_no_such_folder(spec):
    from refine.thinker.vlm import VLMThinker

    with pytest.raises(ArtifactError, match="no such folder"):
        VLMThinker.from_spec(spec)


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    from refine.backbones.shapes import build_shapes_backbone

    folder = tmp_path_factory.mktemp("shapes-editor")
    return build_shapes_backbone(layers=1, width=32, heads=2, text_layers=1, seed=0).save_pretrained(folder)


# -- the README and the command line agree -------------------------------------------------------


def _readme_commands() -> list[tuple[list[str], list[str], str]]:
    """(command path alternatives, options, where) for every `refine ...` the README shows.

    Commands come from inline code and code blocks that start with `refine `; `a|b` alternatives
    are expanded. An option written on its own (`--resume`) belongs to the command named last in
    the same paragraph or bullet, as a reader takes it.
    """
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    found, last, in_block = [], None, False
    for number, line in enumerate(readme.splitlines(), 1):
        if line.startswith("```"):
            in_block = not in_block
            continue
        if not line.strip() or line.lstrip().startswith(("* ", "| ")):
            last = None  # a new paragraph, bullet or table row
        segments = [line.split("#")[0]] if in_block else re.findall(r"`([^`]+)`", line)
        for segment in segments:
            tokens = segment.split()
            options = [t.split("=")[0] for t in tokens if t.startswith("--")]
            if tokens[:1] == ["refine"]:
                words = [t for t in tokens[1:3] if not t.startswith(("-", "[", ".")) and "=" not in t]
                head, alternatives = words[:1], (words[1].split("|") if len(words) > 1 else [])
                last = [head + [alt] for alt in alternatives] or [head]
                found.append((last, options, f"README.md:{number}"))
            elif tokens and all(t.startswith("--") for t in tokens) and last is not None:
                found.append((last, options, f"README.md:{number}"))
    return found


def test_every_command_and_option_the_readme_shows_exists():
    import typer.main

    from refine.cli import app

    root = typer.main.get_command(app)
    root_options = {opt for p in root.params for opt in p.opts} | {"--help", "-h"}
    checked = 0
    for paths, options, where in _readme_commands():
        for path in paths:
            command, words = root, [w for w in path if w]
            while words and hasattr(command, "commands"):  # descend through groups; a command's words are arguments
                assert words[0] in command.commands, f"{where}: 'refine {' '.join(path)}': no command {words[0]!r}"
                command = command.commands[words.pop(0)]
            accepted = {opt for p in command.params for opt in [*p.opts, *getattr(p, "secondary_opts", [])]} | root_options
            for option in options:
                assert option in accepted, f"{where}: 'refine {command.name}' has no option {option}"
                checked += 1
    assert checked >= 10  # the README shows options of several commands


def test_a_local_backbone_path_that_does_not_exist_says_no_such_folder(tmp_path, capsys):
    source = tmp_path / "in.png"
    Image.new("RGB", (32, 32), "white").save(source)
    code, err = _run(["edit", "--backbone", "qwen_image_edit:/no/such/checkpoint", "--image", str(source),
                      "--instruction", "add a red circle", "--out", str(tmp_path / "out.png")], capsys)
    assert code == 2 and "/no/such/checkpoint: no such folder" in _one_error_line(err)


def test_critic_analyze_refuses_a_config_file_that_does_not_exist(tmp_path, capsys, monkeypatch):
    import refine.inline_critic.analysis

    monkeypatch.setattr(refine.inline_critic.analysis, "run_analysis", _no_compute)
    code, err = _run(["critic", "analyze", str(tmp_path), "--config", str(tmp_path / "typo.yaml")], capsys)
    assert code == 2 and "typo.yaml" in _one_error_line(err)
