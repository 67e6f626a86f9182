"""refine.jsonl.read_jsonl: the one JSONL reader of Edit-R1's requests and MT-EditFlow's sequences."""

import pytest

from refine.errors import ConfigError, InputError
from refine.jsonl import read_jsonl

CHECK = dict(valid=lambda r: "image" in r, needs="an 'image' key", example="{'image': ...}", what="records")


def test_reads_dict_lines_and_skips_blank_ones(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"image": "a.png"}\n\n{"image": "b.png", "task": "add"}\n')
    assert read_jsonl(path, **CHECK) == [{"image": "a.png"}, {"image": "b.png", "task": "add"}]


def test_each_failure_names_its_cause(tmp_path):
    with pytest.raises(ConfigError, match="data.path x does not exist"):
        read_jsonl(tmp_path / "x.jsonl", name="data.path x", **CHECK)
    path = tmp_path / "a.jsonl"
    path.write_text('{"image": "a.png"}\n{"task": "add"}\n')
    with pytest.raises(InputError, match=r"a.jsonl:2: each line needs an 'image' key"):
        read_jsonl(path, **CHECK)
    path.write_text("\n")
    with pytest.raises(InputError, match="no records"):
        read_jsonl(path, **CHECK)
