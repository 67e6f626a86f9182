"""ThinkerConfig, the registry's `thinker` refiner and the CLI helpers."""

import io

import pytest
from rich.console import Console

from refine.config import load_config
from refine.editor import compose
from refine.errors import ConfigError
from refine.registry import registry
from refine.thinker.cli_support import default_trace_dir, wrap_with_thinker
from refine.thinker.config import ThinkerConfig, build_thinker_refiner
from refine.thinker.loop import LoopConfig, ThinkWhileEdit
from refine.thinker.shape_expert import ShapeExpertThinker
from refine.thinker.traces import read_turns


def test_registry_builds_the_thinker_refiner_and_config():
    refiner = registry.build("refiner", {"kind": "thinker", "thinker": "expert", "max_turns": 3, "score_threshold": 9})
    assert isinstance(refiner, ThinkWhileEdit) and isinstance(refiner.thinker, ShapeExpertThinker)
    assert refiner.config.max_turns == 3 and refiner.config.score_threshold == 9
    assert registry.resolve("config", "thinker") is ThinkerConfig


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"max_turn": 3}, "unknown key 'max_turn' \\(did you mean 'max_turns'\\?\\)"),
        ({"thinker": "gpt-4.1"}, "is not a thinker spec"),
        ({"thinker": "vlm:"}, "is not a thinker spec"),
        ({"max_turns": 0}, "max_turns"),
        ({"score_threshold": 11}, "score_threshold"),
        ({"select": "best", "critique_last_turn": False}, "set critique_last_turn=true or select='last'"),
        ({"prompt": "gpt"}, "prompt"),
        ({"min_confidence": 0.5}, "ShapeEdit's expert has none"),
        ({"thinker": "vlm:/m", "min_confidence": 1.5}, "min_confidence"),
        ({"thinker": "vlm:/m", "prompt": "shapes-rewrite", "think_before_edit": True}, "only rewrites the instruction before"),
    ],
)
def test_bad_settings_are_config_errors(settings, message):
    with pytest.raises(ConfigError, match=message):
        build_thinker_refiner(**settings)


def test_import_path_thinker_and_non_thinker():
    refiner = build_thinker_refiner(thinker="refine.thinker.shape_expert:ShapeExpertThinker")
    assert isinstance(refiner.thinker, ShapeExpertThinker)
    with pytest.raises(ConfigError, match="not a Thinker"):
        build_thinker_refiner(thinker="collections:OrderedDict")


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "thinker.yaml"
    path.write_text("thinker: expert\nmax_turns: 4\nselect: last\n")
    config = load_config(ThinkerConfig, path, overrides=["score_threshold=null", "edit_from=current"])
    assert config.loop_config() == LoopConfig(max_turns=4, select="last", score_threshold=None, edit_from="current")


def test_wrap_with_thinker_prints_every_turn_and_saves_the_trace(tmp_path, editor, scripted, request_for, monkeypatch):
    import refine.thinker.config as config_module

    monkeypatch.setattr(config_module, "build_thinker", lambda config: scripted())
    out = io.StringIO()
    wrapped = wrap_with_thinker(editor, "expert", max_turns=4, trace_dir=tmp_path / "t", console=Console(file=out, width=300))
    [result] = wrapped.edit([request_for(script=["paint it blue", "paint it red"])])
    lines = out.getvalue().splitlines()
    assert lines[0] == "thinker expert, up to 4 turns"
    assert lines[1] == "[0] turn 1  ran 'make it look like a tomato'  semantic 2.0  quality 9.0  next 'paint it blue'"
    assert lines[3] == "[0] turn 3  ran 'paint it red'  semantic 10.0  quality 9.0  stopped: score_threshold"
    assert lines[4] == "[0] kept turn 3 of 3 (3 editor calls): 'paint it red'"
    assert [r.turn for r in read_turns(tmp_path / "t")] == [1, 2, 3]


def test_default_trace_dir():
    assert str(default_trace_dir("out/cat.png")) == "out/cat.trace"
    assert str(default_trace_dir("out/dir")) == "out/dir/trace"
