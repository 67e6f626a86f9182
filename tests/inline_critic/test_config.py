import pytest

from refine.cli import main
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
