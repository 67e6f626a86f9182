"""Paths checked before any compute: a run must not fail at its last step for want of a folder.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from refine.paths import check_output_dir, check_output_file
    >>> root = Path(tempfile.mkdtemp())
    >>> check_output_file(root / "new" / "out.png", "--out") == root / "new" / "out.png"
    True
    >>> check_output_file(root, "--out")
    Traceback (most recent call last):
    ...
    refine.errors.InputError: --out ...: is an existing folder; give a file path inside it, e.g. ...out.png
    >>> _ = (root / "notes.txt").write_text("x")
    >>> check_output_dir(root / "notes.txt" / "run", "log.output_dir")
    Traceback (most recent call last):
    ...
    refine.errors.InputError: log.output_dir ...: ...notes.txt is a file, not a folder; pick another path

Every command that writes (`refine edit --out`, `refine compare out_dir=`, `refine train ...
output_dir=`) calls one of these two first. Nothing is created: the folder that would hold the
output is probed by creating and removing a temporary file in the nearest folder that exists,
because permission bits alone do not say it (root ignores them, a read-only mount does not).
`check_model_source` does the same for inputs that are model folders: a local path that does not
exist is "no such folder", not the hub's repo-id error it would become inside `from_pretrained`.
`resolve_model_source` also finds a relative path next to the installed package, so a config can
name a bundled model as `refine/assets/<name>` from any working directory (as `refine compare`
resolves its artifact paths), and says how to get a bundled model this install does not have yet.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from refine.errors import ArtifactError, InputError


def check_output_file(path: str | Path, what: str, example: str = "out.png") -> Path:
    """`path` as a `Path` if a file can be written there (its folders may not exist yet); else `InputError`."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path}: is an existing folder; give a file path inside it, e.g. {path / example}")
    _check_writable_parent(path, what)
    return path


def check_output_dir(path: str | Path, what: str) -> Path:
    """`path` as a `Path` if it is, or can become, a folder this process writes into; else `InputError`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path}: is a file, not a folder; pick another path or remove the file")
    if path.is_dir():
        _probe(path, what, path)
    else:
        _check_writable_parent(path, what)
    return path


def _check_writable_parent(path: Path, what: str) -> None:
    """The nearest existing ancestor of `path` must be a folder we can create files in."""
    ancestor = path.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{what} {path}: {ancestor} is a file, not a folder; pick another path")
    _probe(ancestor, what, path)


def _probe(folder: Path, what: str, path: Path) -> None:
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".refine-write-check-")
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise InputError(f"{what} {path}: cannot write in {folder} ({reason}); pick a folder you can write to") from None
    os.close(handle)
    os.unlink(probe)


# What `from_pretrained` accepts as a hub id: `name` or `namespace/name` (letters, digits, - _ .).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")

# The folder holding `refine/`: a checkout's root, or site-packages for a wheel.
_PACKAGE_PARENT = Path(__file__).resolve().parent.parent

# How to get a bundled model (refine/assets/<name>) that is not in this install yet.
MISSING_ASSETS: dict[str, str] = {
    "shapes-vlm": "the ShapeEdit VLM judge is missing from this install: rebuild it with `refine train vlm --config "
    "examples/configs/vlm/shapes-judge-find.yaml`, then `refine train vlm --config "
    "examples/configs/vlm/shapes-judge-read.yaml` and `refine train vlm --config "
    "examples/configs/vlm/shapes-judge-walk.yaml`, and copy the last one's final/ folder to "
    "refine/assets/shapes-vlm (refine/assets/shapes-vlm/README.md in the repository), or point "
    "the judge's backend at a trained folder (Edit-R1: reward.backend.model=runs/<run>/final; multi-turn: "
    "reward.instruction.backend.model=runs/<run>/final)",
}


def resolve_model_source(source: str | Path, what: str = "model") -> str:
    """What to load for `source`: itself when it exists or is a hub id; `refine/...` also beside the installed package.

    >>> resolve_model_source("Qwen/Qwen2.5-VL-3B-Instruct")
    'Qwen/Qwen2.5-VL-3B-Instruct'
    >>> Path(resolve_model_source("refine/assets/shapes-editor")).samefile(_PACKAGE_PARENT / "refine/assets/shapes-editor")
    True
    >>> resolve_model_source("refine/assets/no-such-model", "judge")
    Traceback (most recent call last):
    ...
    refine.errors.ArtifactError: judge refine/assets/no-such-model: not bundled with this install (no folder .../refine/assets/no-such-model); pass the path of a local model folder

    A relative `refine/...` path (a bundled model, `refine/assets/<name>`) is looked up in the
    working directory first, then beside the installed package (a checkout or a wheel); other
    paths as in `check_model_source`.
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.exists() or path.parts[:1] != ("refine",):
        check_model_source(source, what)
        return text
    beside_package = _PACKAGE_PARENT / path
    if beside_package.exists():
        return str(beside_package)
    if path.parts[:2] == ("refine", "assets"):
        name = path.parts[2] if len(path.parts) > 2 else ""
        hint = MISSING_ASSETS.get(name, "pass the path of a local model folder")
        raise ArtifactError(f"{what} {text}: not bundled with this install (no folder {beside_package}); {hint}")
    check_model_source(source, what)
    return text


def check_model_source(source: str | Path, what: str = "model") -> None:
    """Refuse a local model path that does not exist, before a hub lookup turns it into a repo-id error.

    A `Path`, or a string that cannot be a hub id (`/abs/dir`, `./dir`, `~/dir`, `a/b/c`), must
    exist; a string that can be a hub id (`Qwen/Qwen2.5-VL-3B-Instruct`) is left to the loader.

    >>> check_model_source("Qwen/Qwen2.5-VL-3B-Instruct")
    >>> check_model_source("/no/such/checkpoint", "thinker")
    Traceback (most recent call last):
    ...
    refine.errors.ArtifactError: thinker /no/such/checkpoint: no such folder (a hub id looks like 'namespace/name')
    """
    text = str(source)
    if Path(text).expanduser().exists():
        return
    if isinstance(source, Path) or not _HUB_ID.match(text):
        raise ArtifactError(f"{what} {text}: no such folder (a hub id looks like 'namespace/name')")
