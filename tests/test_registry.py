import pytest

from refine.errors import ConfigError
from refine.registry import Registry, import_object


def make_thing(width: int, name: str = "a", **extra):
    return {"width": width, "name": name, **extra}


class Strict:
    def __init__(self, depth: int = 2, scale: float = 1.0):
        self.depth, self.scale = depth, scale


def test_lookup_by_registered_name_and_by_dotted_path():
    reg = Registry({"reward": {"strict": f"{__name__}:Strict"}})
    assert isinstance(reg.build("reward", {"kind": "strict", "depth": "3"}), Strict)
    assert reg.build("reward", {"kind": "strict", "depth": "3"}).depth == 3
    by_path = reg.build("reward", {"kind": f"{__name__}.Strict", "scale": 2})
    assert by_path.scale == 2.0
    assert reg.resolve("reward", f"{__name__}:make_thing") is make_thing


def test_register_decorator_and_runtime_arguments():
    reg = Registry()

    @reg.register("backbone", "thing")
    def thing(width: int, device: str = "cpu"):
        return (width, device)

    assert reg.build("backbone", {"kind": "thing", "width": 3}, device="meta") == (3, "meta")
    assert reg.kinds("backbone") == ["thing"]


def test_unknown_kind_lists_valid_kinds_and_suggests():
    reg = Registry({"reward": {"strict": f"{__name__}:Strict", "shapes_if": "x:y"}})
    with pytest.raises(ConfigError) as info:
        reg.resolve("reward", "strickt")
    assert "did you mean 'strict'?" in str(info.value) and "shapes_if" in str(info.value)


def test_parameter_typos_and_types_are_rejected():
    reg = Registry({"reward": {"strict": f"{__name__}:Strict"}})
    with pytest.raises(ConfigError, match="unknown key 'dept' \\(did you mean 'depth'\\?\\)"):
        reg.build("reward", {"kind": "strict", "dept": 3})
    with pytest.raises(ConfigError, match="depth"):
        reg.build("reward", {"kind": "strict", "depth": "deep"})
    with pytest.raises(ConfigError, match="missing required key 'width'"):
        reg.build("reward", {"kind": f"{__name__}:make_thing"})
    # **kwargs targets accept extra keys.
    assert reg.build("reward", {"kind": f"{__name__}:make_thing", "width": 1, "other": 5})["other"] == 5


def test_bad_import_paths():
    with pytest.raises(ConfigError, match="cannot import"):
        import_object("no_such_module_xyz:thing")
    with pytest.raises(ConfigError, match="has no attribute"):
        import_object("collections:NoSuchThing")
    with pytest.raises(ConfigError, match="no 'kind'"):
        Registry().build("reward", {"width": 1})
