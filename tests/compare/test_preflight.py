"""A bad config fails before any compute, with one line naming the problem (CLI: exit code 2)."""

from pathlib import Path

import pytest
import yaml

from refine.cli import main
from refine.compare import run_compare
from refine.errors import ArtifactError, ConfigError, InputError
from refine.testing.compare_fakes import PaintEditor

FAKES = "refine.testing.compare_fakes"


def _cli(config: dict, tmp_path: Path, capsys) -> tuple[int, str, str]:
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as info:
        main(["compare", str(path)])
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_unknown_entry_kind_fails_before_compute(toy, tmp_path, capsys):
    config = toy(entries={"base": {}, "+typo": {"refiners": [{"kind": "thinkr"}]}})
    code, _, err = _cli(config, tmp_path, capsys)
    line = _one_line(err)
    assert code == 2 and "entry '+typo'" in line and "unknown refiner kind 'thinkr'" in line
    assert PaintEditor.calls == 0 and not Path(config["out_dir"]).exists()


def test_unknown_parameter_and_unknown_editor_fail_with_a_hint(toy):
    with pytest.raises(ConfigError, match=r"entry '\+spell'.*unknown key 'prefx' \(did you mean 'prefix'\?\)"):
        run_compare(toy(entries={"+spell": {"refiners": [{"kind": f"{FAKES}:SpellOut", "prefx": "x"}]}}))
    with pytest.raises(ConfigError, match="cannot import 'no_such_module'"):
        run_compare(toy(editor={"kind": "no_such_module:Editor"}))
    assert PaintEditor.calls == 0


def test_missing_artifact_path_fails_before_compute(toy, tmp_path, capsys):
    missing = tmp_path / "adapters" / "missing.txt"
    config = toy(entries={"base": {}, "+lora": {"refiners": [{"kind": f"{FAKES}:PrefixFromFile", "path": str(missing)}]}})
    code, _, err = _cli(config, tmp_path, capsys)
    line = _one_line(err)
    assert code == 2 and "entry '+lora'" in line and str(missing) in line and "does not exist" in line
    assert PaintEditor.calls == 0
    with pytest.raises(ArtifactError):
        run_compare(config)


def test_optional_entry_with_missing_artifact_is_skipped_with_a_note(toy, tmp_path, capsys):
    spec = [{"kind": f"{FAKES}:PrefixFromFile", "path": str(tmp_path / "missing.txt")}]
    run = run_compare(toy(entries={"base": {}, "+lora": {"refiners": spec, "optional": True}}))
    out = capsys.readouterr().out
    assert "skipping entry '+lora'" in out and "missing.txt" in out
    assert [s.name for s in run.skipped] == ["+lora"] and {r.entry for r in run.rows} == {"base"}
    assert "+lora" in (run.out_dir / "summary.md").read_text()  # the report says what was skipped


def test_artifact_fingerprint_invalidates_only_that_entry(toy, tmp_path):
    adapter = tmp_path / "prefix.txt"
    adapter.write_text("please ")
    entries = {"base": {}, "+file": {"refiners": [{"kind": f"{FAKES}:PrefixFromFile", "path": str(adapter)}]}}
    first = run_compare(toy(cases=4, entries=entries), write_report=False)
    assert first.rows[-1].instruction_used.startswith("please ")
    adapter.write_text("kindly ")  # retrained artifact: new size and mtime
    second = run_compare(toy(cases=4, entries=entries), write_report=False)
    assert second.edited == {"base": 0, "+file": 4}
    assert second.rows[-1].instruction_used.startswith("kindly ")


@pytest.mark.parametrize("kind", ["gedit", "imgedit", "edival"])
def test_benchmark_folder_in_the_wrong_layout_fails_before_compute(kind, toy, tmp_path, capsys):
    root = tmp_path / f"{kind}-wrong"
    (root / "images").mkdir(parents=True)
    (root / "images" / "0.png").write_bytes(b"")
    (root / "metadata.jsonl").write_text('{"key": "0", "instruction": "add a cat"}\n')
    judge = {"backend": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "judge"}}
    config = toy(benchmark={"kind": kind, "root": str(root), "judge": judge})
    code, _, err = _cli(config, tmp_path, capsys)
    line = _one_line(err)
    assert code == 2 and kind in line and str(root) in line and "expected <root>/" in line
    assert PaintEditor.calls == 0


def test_folder_benchmark_without_a_judge_or_with_a_missing_judge_model(toy, tmp_path):
    from refine.testing.benchmark_folders import write_imgedit_folder

    root = write_imgedit_folder(tmp_path / "imgedit", cases=2)
    with pytest.raises(ConfigError, match="needs a judge"):
        run_compare(toy(benchmark={"kind": "imgedit", "root": str(root)}))
    with pytest.raises(ArtifactError, match="judge model '/no/such/vlm' does not exist"):
        run_compare(toy(benchmark={"kind": "imgedit", "root": str(root), "judge": {"backend": {"kind": "transformers", "model": "/no/such/vlm"}}}))
    with pytest.raises(InputError, match=r"1 case\(s\) have no source image under .*: '100'"):
        (root / "singleturn" / "for_add" / "000000000.jpg").unlink()
        run_compare(toy(benchmark={"kind": "imgedit", "root": str(root), "judge": {"backend": {"kind": "openai", "base_url": "http://x/v1", "model": "m"}}}))
    assert PaintEditor.calls == 0


def test_config_errors_name_the_key(toy):
    with pytest.raises(ConfigError, match="unknown key 'seed' \\(did you mean 'seeds'\\?\\)"):
        run_compare(toy(seed=3))
    with pytest.raises(ConfigError, match="entry name 'a/b'"):
        run_compare(toy(entries={"a/b": {}}))
    with pytest.raises(ConfigError, match="seeds .* repeat"):
        run_compare(toy(seeds=[0, 0]))
