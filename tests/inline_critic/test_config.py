from pathlib import Path

import pytest

from refine.cli import main
from refine.compare.config import CompareConfig
from refine.compare import entries as entries_module
from refine.compare.entries import plan_entries
from refine.config import load_config
from refine.inline_critic.modules import uniform_probe_layers


@pytest.mark.parametrize("preset", ["inline_critic/shapes", "inline_critic/qwen_image_edit_2509", "inline_critic/flux_kontext"])
def test_presets_validate_and_start_with_their_command(preset, capsys):
    from refine.presets import find_preset

    main(["config", "validate", preset])
    assert "ok" in capsys.readouterr().out
    first = find_preset(preset).read_text().splitlines()[0]
    assert first.startswith("# ") and "train inline-critic" in first and preset.split("/")[1] in first


def test_cross_field_rules_say_how_to_fix(capsys):
    with pytest.raises(SystemExit) as info:
        main(["config", "validate", "inline_critic/shapes", "probe_layers=[1,1]"])
    assert info.value.code == 2 and "list each block once" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["config", "validate", "inline_critic/shapes", "data.kind=jsonl"])
    assert "needs data.path" in capsys.readouterr().err


def test_cli_rejects_a_bad_stage_in_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "inline-critic", "--config", "examples/configs/inline_critic/shapes.yaml", "--stage", "5"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--stage '5'" in err and "Traceback" not in err


def test_uniform_probe_layers():
    assert uniform_probe_layers(60, 4) == [11, 23, 35, 47]
    assert uniform_probe_layers(4, 3) == [0, 1, 2]
    assert uniform_probe_layers(2, 5) == [0]


def test_the_ablation_compare_config_has_every_arm_on_three_training_seeds_controls_skipped_until_trained(monkeypatch):
    """examples/configs/compare/shapes-critic-ablation.yaml: the paper's arms x 3 training seeds (the matched LoRA x 1) on all of shapes-bench, 2 seeds."""
    path = Path(__file__).resolve().parents[2] / "examples" / "configs" / "compare" / "shapes-critic-ablation.yaml"
    config = load_config(CompareConfig, path)
    assert config.benchmark["kind"] == "shapes-bench" and config.limit is None and len(config.seeds) == 2
    arms = ["+inline_critic.3stage", "+inline_critic.single_stage", "+learnable_token", "+lora"]
    assert set(config.entries) == {"base", "+lora_r1.s0"} | {f"{arm}.s{s}" for arm in arms for s in range(3)}
    # as on a fresh checkout: no runs/critic10x (in the cwd or next to the package), so every trained arm is skipped
    real = entries_module.resolve_path
    monkeypatch.setattr(entries_module, "resolve_path", lambda value: None if value.startswith("runs/") else real(value))
    entries, skipped = plan_entries(config)
    assert [e.name for e in entries] == ["base", "+inline_critic.3stage.s0"]
    assert len(skipped) == 12
