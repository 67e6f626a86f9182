"""Every shipped Edit-R1 preset and accelerate config is valid, down to its component specs."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from refine.cli import app
from refine.config import load_config
from refine.edit_r1.config import EditR1Config
from refine.registry import registry, validate_params

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted((ROOT / "examples" / "configs" / "edit_r1").glob("*.yaml"))


def test_the_three_presets_are_shipped():
    assert {p.stem for p in PRESETS} >= {"shapes", "qwen_image_edit_2509", "flux_kontext"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_is_valid(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and f"--config examples/configs/edit_r1/{path.name}" in first, first
    config = load_config(EditR1Config, path)
    tracked = [("reward", spec) for spec in config.track_rewards.values()]
    for category, spec in (("backbone", config.backbone), ("reward", config.reward), *tracked):
        target = registry.resolve(category, spec["kind"])
        params = {k: v for k, v in spec.items() if k != "kind"}
        validate_params(target, params, label=f"{path.name} {category}")
        if isinstance(params.get("backend"), dict):  # an MLLM judge's backend spec
            backend = params["backend"]
            validate_params(registry.resolve("vlm_backend", backend["kind"]), {k: v for k, v in backend.items() if k != "kind"},
                            label=f"{path.name} reward.backend")
    if "--config_file" in first:  # launched with accelerate: the batch must split over its processes
        accelerate_file = ROOT / first.split("--config_file")[1].split()[0]
        launch = yaml.safe_load(accelerate_file.read_text())
        assert launch["distributed_type"] in ("MULTI_GPU", "MULTI_CPU", "NO")
        config.check_processes(launch["num_processes"] * launch.get("num_machines", 1))
    assert CliRunner().invoke(app, ["config", "validate", f"edit_r1/{path.stem}"]).output.startswith("ok")


def test_a_typo_is_refused_with_a_suggestion():
    result = CliRunner().invoke(app, ["config", "validate", "edit_r1/shapes", "nft.kl_wieght=0"])
    assert result.exit_code != 0 and "nft.kl_weight" in str(result.exception)
