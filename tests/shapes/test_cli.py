import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from refine.cli import app, main
from refine.shapes.cli import _picks, render_grid
from refine.shapes.data import find_case, iter_cases, load_split


def test_show_writes_a_readable_grid(tmp_path):
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(app, ["shapes", "show", "--split", "shapes-bench", "--n", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    grid = Image.open(out)
    assert grid.width >= 600 and grid.height >= 4 * 128  # three columns, images scaled 4x
    assert "wrote 4 cases" in result.output


def test_show_filters_and_multi_turn(tmp_path):
    out = tmp_path / "mt.png"
    result = CliRunner().invoke(app, ["shapes", "show", "--split", "shapes-mt", "--n", "3", "--phrasing", "indirect", "--out", str(out)])
    assert result.exit_code == 0, result.output
    # the grid is exactly the three evenly spread indirect turns of shapes-mt, one row each
    indirect = [c for c in iter_cases("shapes-mt") if c.phrasing == "indirect"]
    assert 3 < len(indirect) < len(list(iter_cases("shapes-mt")))
    picked = [indirect[i] for i in _picks(len(indirect), 3)]
    expected = render_grid(picked, scale=4)
    assert list(Image.open(out).convert("RGB").getdata()) == list(expected.getdata())
    assert "wrote 3 cases" in result.output


def test_judge_prints_scores_and_breakdown(tmp_path):
    case = find_case("bench-recolor-indirect-04")
    edited = tmp_path / "edited.png"
    case.target_image.save(edited)
    result = CliRunner().invoke(app, ["shapes", "judge", "--case", case.id, "--edited", str(edited)])
    assert result.exit_code == 0, result.output
    assert "IF (instruction following)" in result.output and "1.000" in result.output
    assert "IF 1.00: 1 of 1 required changes fully done" in result.output
    case.source_image.save(edited)
    result = CliRunner().invoke(app, ["shapes", "judge", "--case", case.id, "--edited", str(edited)])
    assert "IF 0.00" in result.output and "[FAIL]" in result.output


def test_unknown_case_is_one_line_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["shapes", "judge", "--case", "bench-nope", "--edited", str(tmp_path / "x.png")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no benchmark case 'bench-nope'" in err and "Traceback" not in err


def test_export_command(tmp_path):
    result = CliRunner().invoke(app, ["shapes", "export", "--split", "shapes-mt", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "sequences.jsonl").read_text().splitlines()]
    sequences = load_split("shapes-mt")
    assert [r["id"] for r in records] == [s.id for s in sequences]
    for record, sequence in zip(records, sequences):
        assert [t["instruction"] for t in record["turns"]] == [c.instruction for c in sequence.cases]
        assert same_pixels(tmp_path / record["source_image"], sequence.source_image)
        assert same_pixels(tmp_path / record["turns"][-1]["target_image"], sequence.cases[-1].target_image)


def same_pixels(path, image):
    return list(Image.open(path).convert("RGB").getdata()) == list(image.convert("RGB").getdata())
