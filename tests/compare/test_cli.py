"""`refine compare`: config path or default preset, overrides, --out, --fresh; prints the table and the report path."""

import pytest
import yaml

import refine.compare.runner as runner
from refine.cli import main


@pytest.fixture
def toy_yaml(toy, tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text("# refine compare toy.yaml\n" + yaml.safe_dump(toy("cli", cases=4)))
    return path


def test_compare_prints_the_table_and_where_the_report_is(toy_yaml, tmp_path, capsys):
    out = tmp_path / "report-here"
    main(["compare", str(toy_yaml), "limit=2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "toy: 2 cases x 1 seed(s)" in printed and "+spell" in printed and "2 new" in printed
    assert f"report: {out / 'report.html'}" in printed.replace("\n", "")
    assert (out / "report.html").is_file() and len((out / "cases.jsonl").read_text().splitlines()) == 4

    main(["compare", str(toy_yaml), "limit=2", "--out", str(out), "--fresh"])
    assert "2 new" in capsys.readouterr().out


def test_no_config_runs_the_default_preset_and_a_leading_override_applies_to_it(toy_yaml, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "DEFAULT_PRESET", str(toy_yaml))
    main(["compare", "limit=3", "--out", str(tmp_path / "default")])
    printed = capsys.readouterr().out
    assert "toy: 3 cases" in printed and (tmp_path / "default" / "summary.csv").is_file()


def test_default_preset_is_a_valid_compare_config(capsys):
    main(["config", "validate", "compare/shapes"])
    assert "ok: compare/shapes" in capsys.readouterr().out
    from refine.compare import load_compare_config

    config = load_compare_config(None)
    assert config.benchmark == {"kind": "shapes-bench"} and list(config.entries)[:1] == ["base"]
    assert {"base", "+edit_r1", "+thinker", "+edit_r1+thinker"} <= set(config.entries)
