"""Output paths are checked before any compute, by one helper, in every command that writes.

"Not writable" is simulated in ways root respects (the suite runs as root, which ignores
permission bits): a path under a regular file (ENOTDIR) and a path under /sys (sysfs refuses new
files to everyone).
"""

from pathlib import Path

import pytest

from refine.errors import InputError
from refine.paths import check_output_dir, check_output_file

SYS_UNWRITABLE = Path("/sys/refine-test-output")


def _sys_refuses_writes() -> bool:
    return Path("/sys").is_dir() and _probe_fails(Path("/sys"))


def _probe_fails(folder: Path) -> bool:
    try:
        (folder / ".refine-probe").touch()
    except OSError:
        return True
    (folder / ".refine-probe").unlink()
    return False


needs_sys = pytest.mark.skipif(not _sys_refuses_writes(), reason="no read-only /sys here")


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a folder")
    return path


def test_a_new_path_in_a_writable_folder_passes_and_nothing_is_created(tmp_path):
    assert check_output_file(tmp_path / "a" / "b" / "out.png", "--out") == tmp_path / "a" / "b" / "out.png"
    assert check_output_dir(tmp_path / "run", "output_dir") == tmp_path / "run"
    assert check_output_dir(tmp_path, "output_dir") == tmp_path  # an existing folder is fine for a folder
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the probe leaves no trace


def test_an_existing_folder_is_not_an_output_file(tmp_path):
    with pytest.raises(InputError, match="is an existing folder"):
        check_output_file(tmp_path, "--out")


def test_a_path_under_a_file_is_refused(a_file):
    with pytest.raises(InputError, match="notes.txt is a file, not a folder"):
        check_output_file(a_file / "out.png", "--out")
    with pytest.raises(InputError, match="notes.txt is a file, not a folder"):
        check_output_dir(a_file / "deeper" / "run", "output_dir")
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_output_dir(a_file, "output_dir")


@needs_sys
def test_a_folder_nobody_may_write_is_refused():
    with pytest.raises(InputError, match="cannot write in /sys"):
        check_output_file(SYS_UNWRITABLE / "out.png", "--out")
    with pytest.raises(InputError, match="cannot write in /sys"):
        check_output_dir(SYS_UNWRITABLE, "output_dir")
