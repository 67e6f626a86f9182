import pytest
from pydantic import Field, model_validator

from refine.config import RefineConfig, apply_overrides, load_config
from refine.errors import ConfigError


class Optim(RefineConfig):
    lr: float = Field(1e-4, description="learning rate")
    betas: list[float] = Field([0.9, 0.999], description="Adam betas")


class Train(RefineConfig):
    steps: int = Field(10, description="optimizer steps")
    use_ema: bool = Field(True, description="keep an EMA")
    name: str | None = Field(None, description="run name")
    optim: Optim = Field(default_factory=Optim, description="optimizer settings")
    warmup: int = Field(0, description="warmup steps")

    @model_validator(mode="after")
    def _warmup_fits(self):
        if self.warmup > self.steps:
            raise ValueError(f"warmup ({self.warmup}) exceeds steps ({self.steps}); lower warmup or raise steps")
        return self


def test_yaml_then_overrides_with_type_coercion(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 3\noptim:\n  lr: 0.5\n")
    cfg = load_config(Train, path, ["optim.lr=2e-3", "use_ema=false", "optim.betas=[0.5,0.6]", "name=null", "steps=7"])
    assert cfg.steps == 7 and cfg.use_ema is False and cfg.name is None
    assert cfg.optim.lr == pytest.approx(2e-3) and cfg.optim.betas == [0.5, 0.6]


def test_override_creates_sections_and_keeps_input_untouched():
    data = {"a": {"b": 1}}
    out = apply_overrides(data, ["a.c=2", "d.e=x"])
    assert out == {"a": {"b": 1, "c": 2}, "d": {"e": "x"}} and data == {"a": {"b": 1}}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["setps=3"], "unknown key 'setps' (did you mean 'steps'?)"),
        (["optim.lrr=1"], "unknown key 'optim.lrr' (did you mean 'optim.lr'?)"),
        (["optim.zzz=1"], "valid keys: betas, lr"),
        (["steps=many"], ("steps: ", "(got 'many')")),  # our frame around pydantic's words, not its words
        (["warmup=50"], "lower warmup or raise steps"),
        (["novalue"], "not of the form key.sub=value"),
        (["steps.x=1"], ("steps: ", "(got a mapping)")),
    ],
)
def test_bad_configs_name_the_problem(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(Train, overrides=overrides)
    for part in (message,) if isinstance(message, str) else message:
        assert part in str(info.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Train, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1,\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(Train, bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(Train, listy)


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config(Train, overrides=["steps=4", "optim.lr=0.1"])
    path = tmp_path / "out.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(Train, path) == cfg


def test_override_into_a_scalar_from_the_file_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 3\n")
    with pytest.raises(ConfigError, match="holds a int, not a section"):
        load_config(Train, path, ["steps.x=1"])
