"""Every command of docs/gpu-guide.md and every compare preset's `vllm serve` header is checked, without a GPU.

What "checked" means per command (a command of another kind fails the test, so none goes unchecked):
* `refine ...`: click parses it against the real command tree (commands, options, types, required
  options); configs it names load with their overrides, and compare configs are planned as
  `refine compare` plans them before compute (benchmark parameters against the constructor, the
  judge spec and scheme, every entry's kinds, parameters, order and artifacts: entries whose artifact
  is not trained yet must be `optional`);
* `accelerate launch ...`: its accelerate config file exists and the training config validates;
* `vllm serve ...`: flags are from vLLM's CLI, JSON values parse, and they agree with the judge
  settings of the presets (images per question, log-probs the logit mode asks for);
* `huggingface-cli download ...` and `git clone ...`: the form and the dataset/repository names
  the benchmark readers document.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import typer.main

from refine.cli import _resolve, app
from refine.compare.benchmarks.mllm import check_judge
from refine.compare.benchmarks.protocols import check_scheme
from refine.compare.benchmarks.rewrite import RewriteSpec
from refine.compare.config import CompareConfig
from refine.compare.entries import plan_entries
from refine.config import validate_config
from refine.presets import find_preset
from refine.registry import registry, validate_params

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "gpu-guide.md"
PRESETS = ["gedit", "imgedit", "edival", "kris", "rise", "mse-bench"]
VLLM_FLAGS = {
    "--port", "--host", "--tensor-parallel-size", "--limit-mm-per-prompt", "--max-logprobs", "--mm-processor-kwargs",
    "--served-model-name", "--max-model-len", "--gpu-memory-utilization",
}
DATASETS = {"stepfun-ai/GEdit-Bench", "leigangqu/MSE-Bench"}  # the hub ids gedit.py / mse.py document
REPOSITORIES = {"https://github.com/mercurystraw/Kris_Bench", "https://github.com/PhoenixZ810/RISEBench"}


def guide_commands() -> list[str]:
    """The shell commands of the guide's ```bash blocks, continuation lines joined."""
    commands, block, in_bash = [], [], False
    for line in GUIDE.read_text().splitlines():
        if line.startswith("```"):
            in_bash = line.strip() == "```bash" if not in_bash else False
            continue
        if in_bash and line.strip() and not line.lstrip().startswith("#"):
            block.append(line.rstrip())
            if not line.rstrip().endswith("\\"):
                commands.append(" ".join(part.rstrip("\\").strip() for part in block))
                block = []
    return commands


def parse_refine(argv: list[str]):
    """Descend click's command tree and parse `argv` as `refine` would (nothing is run)."""
    command, args, name = typer.main.get_command(app), list(argv), "refine"
    while hasattr(command, "list_commands"):  # a group; refine's groups take no options the guide uses
        name = args.pop(0)
        found = command.get_command(command.context_class(command), name)
        assert found is not None, f"refine has no command {name!r}"
        command = found
    ctx = command.make_context(name, args)
    return name, ctx.params


def plan_compare(config: CompareConfig) -> None:
    """What `refine compare` checks before compute, short of reading the benchmark's data."""
    spec = dict(config.benchmark)
    target = registry.resolve("benchmark", spec.pop("kind"))
    validate_params(target, spec, label="benchmark")
    judge = check_judge(spec["judge"], config.benchmark["kind"])
    check_scheme(config.benchmark["kind"], judge.scheme, judge.prompts)
    if spec.get("rewrite") is not None:
        validate_config(RewriteSpec, spec["rewrite"])
    entries, skipped = plan_entries(config)
    assert "base" in [e.name for e in entries]
    for skip in skipped:
        assert config.entries[skip.name].optional, f"entry {skip.name!r} would fail: {skip.reason}"


def check_vllm(argv: list[str], where: str) -> dict:
    assert argv[:2] == ["vllm", "serve"] and not argv[2].startswith("-"), where
    flags = {}
    for i, token in enumerate(argv[3:], 3):
        if token.startswith("--"):
            assert token in VLLM_FLAGS, f"{where}: {token} is not a vllm serve flag we document"
            flags[token] = argv[i + 1]
    for name in ("--limit-mm-per-prompt", "--mm-processor-kwargs"):
        if name in flags:
            flags[name] = json.loads(flags[name])  # vLLM reads these as JSON
    assert flags.get("--limit-mm-per-prompt", {}).get("image", 1) >= 2, f"{where}: a judge question carries two images"
    return flags


def check_command(command: str) -> str:
    argv = shlex.split(command.replace('"$(which refine)"', "refine"))
    if argv[0] == "vllm":
        check_vllm(argv, command)
        return "vllm"
    if argv[0] == "huggingface-cli":
        assert argv[1] == "download" and argv[2] in DATASETS and argv[3:5] == ["--repo-type", "dataset"] and argv[5] == "--local-dir"
        return "download"
    if argv[0] == "git":
        assert argv[1] == "clone" and argv[2] in REPOSITORIES
        return "clone"
    if argv[:2] == ["accelerate", "launch"]:
        rest = argv[2:]
        if rest[0] == "--config_file":
            assert (ROOT / rest[1]).is_file(), f"{command}: no accelerate config {rest[1]}"
            rest = rest[2:]
        config = rest[rest.index("--config") + 1]
        assert (ROOT / config).is_file()
        _resolve(str(ROOT / config), [], None)
        if rest[0] == "refine":
            parse_refine(rest[1:])
        else:
            assert rest[:2] == ["-m", "refine.edit_r1.train"], command
        return "accelerate"
    assert argv[0] == "refine", f"unchecked command in the guide: {command}"
    name, params = parse_refine(argv[1:])
    if name == "compare":
        if params["config"] == "export":  # `refine compare export RUN --layout NAME`
            assert params["layout"] in ("gedit", "imgedit", "edival", "kris", "rise")
            return "refine"
        config = _resolve(params["config"], list(params["overrides"] or []), None)
        plan_compare(config)
    elif name == "validate":
        plan_compare(_resolve(params["preset"], list(params["overrides"]), params["kind"]))
    elif name == "edit":
        assert params["backbone"].partition(":")[0] in registry.kinds("backbone")
    elif "config" in params and params["config"]:
        _resolve(str(ROOT / params["config"]) if (ROOT / params["config"]).is_file() else params["config"], [], None)
    return "refine"


@pytest.mark.parametrize("command", guide_commands())
def test_every_command_of_the_gpu_guide_parses_and_its_configs_validate(command):
    check_command(command)


def test_the_guide_covers_the_vllm_route_the_strategies_and_gedit():
    kinds = [shlex.split(c)[0] for c in guide_commands()]
    assert kinds.count("vllm") == 2 and "compare/gedit-qwen-image-edit-2509" in " ".join(guide_commands())
    config = _resolve("compare/gedit-qwen-image-edit-2509", [], None)
    assert config.benchmark["kind"] == "gedit" and config.editor["path"] == "Qwen/Qwen-Image-Edit-2509"
    for refiner in ("thinker", "inline_critic", "edit_r1", "multiturn"):  # with and without each strategy
        assert any([r["kind"] for r in e.refiners] == [refiner] for e in config.entries.values()), refiner


@pytest.mark.parametrize("name", PRESETS)
def test_each_benchmark_preset_plans_and_its_vllm_header_matches_its_judge(name):
    path = find_preset(f"compare/{name}-qwen-image-edit-2509")
    header = path.read_text().splitlines()
    assert header[0] == f"# refine compare compare/{name}-qwen-image-edit-2509"  # the command that runs it
    config = _resolve(str(path), [], None)
    plan_compare(config)
    assert config.benchmark["kind"] == name
    serve = next(line.lstrip("# ").strip() for line in header if line.lstrip("# ").startswith("vllm serve"))
    flags = check_vllm(shlex.split(serve), str(path))
    backend = config.benchmark["judge"]["backend"]
    assert backend["model"] == shlex.split(serve)[2]  # the name the server registers
    assert flags["--max-logprobs"] and int(flags["--max-logprobs"]) >= backend["top_logprobs"]
    assert re.fullmatch(r"http://[\w.-]+:" + flags["--port"] + "/v1", backend["base_url"])


def test_a_config_error_in_a_guide_command_is_caught():
    """The checker is not a rubber stamp: a typo'd option, override or vLLM flag fails it."""
    with pytest.raises(Exception):
        check_command("refine edit --backbone qwen_image_edit:Qwen/Qwen-Image-Edit-2509 --image a.png --instruction x --out o.png --sed 0")
    with pytest.raises(Exception):
        check_command("refine compare compare/gedit-qwen-image-edit-2509 benchmark.judge.shceme=official")
    with pytest.raises(Exception):
        check_command("refine compare compare/gedit-qwen-image-edit-2509 benchmark.judge.scheme=official")  # no prompts
    with pytest.raises(AssertionError):
        check_command("vllm serve m --limit-mm-per-prompt '{\"image\": 1}'")
    with pytest.raises(AssertionError):
        check_command("python evaluate.py")
