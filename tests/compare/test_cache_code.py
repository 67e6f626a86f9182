"""The compare cache reuses an output only when the same code made it, and says how much it reused."""

import io
import json

from rich.console import Console

from refine.compare import entries, run_compare
from refine.compare.config import CompareConfig
from refine.compare.entries import plan_entries
from refine.testing.compare_fakes import PaintEditor, toy_config


def _quiet():
    return Console(file=io.StringIO(), width=200)


def test_a_changed_source_hash_recomputes_every_case(toy, monkeypatch):
    config = toy(cases=6)
    run_compare(config, console=_quiet(), write_report=False)
    calls = PaintEditor.calls
    monkeypatch.setattr(entries, "source_hash", lambda: "0123456789abcdef")  # as if refine's code had changed
    rerun = run_compare(config, console=_quiet(), write_report=False)
    assert rerun.edited == {"base": 6, "+spell": 6}
    assert PaintEditor.calls == 2 * calls  # everything edited again


def test_an_unchanged_source_hash_reuses_every_case(toy):
    config = toy(cases=6)
    run_compare(config, console=_quiet(), write_report=False)
    calls = PaintEditor.calls
    rerun = run_compare(config, console=_quiet(), write_report=False)
    assert rerun.edited == {"base": 0, "+spell": 0} and PaintEditor.calls == calls


def test_the_source_hash_is_part_of_the_entry_key(monkeypatch):
    cfg = CompareConfig(**toy_config("/tmp/unused"))
    before = [e.key for e in plan_entries(cfg)[0]]
    monkeypatch.setattr(entries, "source_hash", lambda: "fedcba9876543210")
    after = [e.key for e in plan_entries(cfg)[0]]
    assert len(set(before) | set(after)) == 4  # both entries changed key


def test_source_hash_covers_every_py_file_but_testing_and_caches(tmp_path, monkeypatch):
    package = tmp_path / "refine"
    for name in ("a.py", "sub/b.py", "testing/fake.py", "sub/__pycache__/b.py", "README.md"):
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text("x = 1\n")
    monkeypatch.setattr(entries, "_PACKAGE_ROOT", package)
    digest = entries.source_hash.__wrapped__  # uncached, to hash the fake package each time
    first = digest()
    for ignored in ("testing/fake.py", "sub/__pycache__/b.py", "README.md"):
        (package / ignored).write_text("x = 2\n")
        assert digest() == first, ignored
    (package / "sub/b.py").write_text("x = 2\n")
    assert digest() != first
    (package / "sub/b.py").write_text("x = 1\n")
    (package / "sub/b.py").rename(package / "sub/c.py")  # same content, other module: other code
    assert digest() != first


def test_reused_and_new_counts_are_printed_and_kept_in_summary_json(toy):
    config = toy(cases=6, seeds=[0, 1])
    run_compare(toy_config(config["out_dir"], cases=6, seeds=[0, 1], entries={"base": {}}), console=_quiet(), write_report=False)
    console = _quiet()
    run = run_compare(config, console=console)  # base comes from the cache, +spell is new
    assert "reused 12, new 12" in console.file.getvalue()
    cache = json.loads((run.out_dir / "summary.json").read_text())["cache"]
    assert cache == {"reused": 12, "new": 12, "per_entry": {"base": {"reused": 12, "new": 0}, "+spell": {"reused": 0, "new": 12}}}
    assert "reused 12, new 12" in (run.out_dir / "summary.md").read_text()
    assert json.loads((run.out_dir / "summary.json").read_text())["code"] == entries.source_hash()
