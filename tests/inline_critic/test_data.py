import json
from itertools import islice

import pytest
from PIL import Image

from refine.errors import InputError
from refine.inline_critic.config import DataConfig
from refine.inline_critic.data import edit_pair_stream, validation_pairs


def _write_folder(root, n):
    for i in range(n):
        case = root / f"{i:03d}"
        case.mkdir(parents=True)
        Image.new("RGB", (8, 8), (i, 0, 0)).save(case / "source.png")
        Image.new("RGB", (8, 8), (0, i, 0)).save(case / "target.jpg")
        (case / "instruction.txt").write_text(f"edit number {i}\n")


def test_folder_layout_holds_out_the_last_pairs(tmp_path):
    _write_folder(tmp_path, 5)
    config = DataConfig(kind="folder", path=str(tmp_path), validation_cases=2)
    held_out = validation_pairs(config)
    assert [p.instruction for p in held_out] == ["edit number 3", "edit number 4"]
    seen = {p.instruction for p in islice(edit_pair_stream(config), 9)}
    assert seen == {"edit number 0", "edit number 1", "edit number 2"}  # cycles, never the held-out pairs
    assert held_out[0].target.getpixel((0, 0))[1] in (2, 3, 4)  # JPEG-tolerant green channel


def test_jsonl_layout_accepts_export_split_keys(tmp_path):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "b.png")
    lines = [{"source": "a.png", "target": "b.png", "instruction": "make it blue"},
             {"source_image": "b.png", "target_image": "a.png", "instruction": "make it red"}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    pairs = validation_pairs(DataConfig(kind="jsonl", path=str(path), validation_cases=2))
    assert [p.instruction for p in pairs] == ["make it blue", "make it red"]
    assert pairs[1].target.getpixel((0, 0)) == (255, 0, 0)


def test_bad_local_data_names_the_problem(tmp_path):
    (tmp_path / "case").mkdir()
    with pytest.raises(InputError, match="instruction.txt"):
        validation_pairs(DataConfig(kind="folder", path=str(tmp_path), validation_cases=1))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"source": "a.png"}\n')
    with pytest.raises(InputError, match="bad.jsonl:1"):
        validation_pairs(DataConfig(kind="jsonl", path=str(bad), validation_cases=1))


def test_shapes_validation_is_disjoint_from_training():
    config = DataConfig(kind="shapes", validation_cases=4)
    train = [p.instruction + str(p.source.tobytes()) for p in islice(edit_pair_stream(config), 64)]
    held = [p.instruction + str(p.source.tobytes()) for p in validation_pairs(config)]
    assert len(held) == 4 and not set(held) & set(train)
