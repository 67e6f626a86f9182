"""Every shipped MT-EditFlow preset is valid, down to its component specs (nothing is built or downloaded)."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from refine.cli import app
from refine.config import load_config
from refine.multiturn.config import MultiTurnConfig
from refine.registry import registry, validate_params

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted((ROOT / "examples" / "configs" / "multiturn").glob("*.yaml"))


def test_the_three_presets_are_shipped():
    assert {p.stem for p in PRESETS} >= {"shapes", "qwen_image_edit_2509", "flux_kontext"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_is_valid(path):
    first = path.read_text().splitlines()[0]
    assert first == f"# refine train multiturn --config examples/configs/multiturn/{path.name}", first
    config = load_config(MultiTurnConfig, path)
    backbone = config.backbone
    validate_params(registry.resolve("backbone", backbone["kind"]), {k: v for k, v in backbone.items() if k != "kind"}, label=path.name)
    for slot in ("instruction", "consistency", "quality"):
        spec = getattr(config.reward, slot)
        if spec is None or spec["kind"] == "shapes":
            continue
        params = {k: v for k, v in spec.items() if k != "kind"}
        validate_params(registry.resolve("reward", spec["kind"]), params, label=f"{path.name} reward.{slot}")
        if isinstance(params.get("backend"), dict):
            backend = params["backend"]
            validate_params(registry.resolve("vlm_backend", backend["kind"]), {k: v for k, v in backend.items() if k != "kind"},
                            label=f"{path.name} reward.{slot}.backend")
    assert CliRunner().invoke(app, ["config", "validate", f"multiturn/{path.stem}"]).output.startswith("ok")


def test_gpu_presets_use_the_papers_settings():
    for name in ("qwen_image_edit_2509", "flux_kontext"):
        config = load_config(MultiTurnConfig, ROOT / "examples" / "configs" / "multiturn" / f"{name}.yaml")
        assert (config.rollout.turns, config.rollout.group_size, config.rollout.steps) == (3, 16, 12)
        assert config.reward.instruction["kind"] == "mllm_multiturn" and config.reward.instruction["thinking"] is True
        assert config.reward.instruction["backend"]["model"] == "Qwen/Qwen3-VL-8B-Instruct"
        assert config.reward.weights() == {"if": 0.7, "cc": 0.3}
        assert (config.advantage.level, config.advantage.credit) == ("advantage", "broadcast")


def test_the_shapes_preset_caps_its_cpu_time_and_tunes_on_the_val_split():
    config = load_config(MultiTurnConfig, ROOT / "examples" / "configs" / "multiturn" / "shapes.yaml")
    assert config.train.max_cpu_seconds == 1800 and config.eval.benchmark == "shapes-mt-val"


def test_reported_splits_are_refused_for_training_time_evaluation():
    from refine.errors import ConfigError

    with pytest.raises(ConfigError, match="tune on shapes-mt-val"):
        load_config(MultiTurnConfig, overrides=["eval.benchmark=shapes-mt"])


def test_the_shapes_mt_compare_preset_has_a_multiturn_entry_skipped_until_its_lora_exists():
    from refine.compare.config import CompareConfig
    from refine.compare.entries import plan_entries

    config = load_config(CompareConfig, ROOT / "examples" / "configs" / "compare" / "shapes-mt.yaml")
    assert "benchmark: shapes-mt\n" in (ROOT / "examples" / "configs" / "compare" / "shapes-mt.yaml").read_text()
    entries, skipped = plan_entries(config)
    planned = {e.name for e in entries} | {s.name for s in skipped}
    assert {"base", "+multiturn", "+multiturn+thinker"} <= planned
    assert registry.resolve("refiner", "multiturn").__name__ == "MultiTurnRefiner"
