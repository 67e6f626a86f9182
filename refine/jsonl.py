"""`read_jsonl`: a JSONL file of records (one JSON object a line), checked line by line.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from refine.jsonl import read_jsonl
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "train.jsonl"
    ...     _ = path.write_text('{"image": "a.png", "instruction": "add a red circle"}\\n\\n[1]\\n')
    ...     read_jsonl(path, valid=lambda r: "image" in r, needs="'image' key", example="{'image': ...}")
    Traceback (most recent call last):
    ...
    refine.errors.InputError: ...train.jsonl:3: each line needs 'image' key

Shared by the strategies that train from JSONL files (Edit-R1's requests, MT-EditFlow's
sequences); each says what a line needs. Blank lines are skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from refine.errors import ConfigError, InputError


def read_jsonl(
    path: str | Path,
    *,
    valid: Callable[[dict], bool],
    needs: str,
    example: str,
    what: str = "records",
    name: str | None = None,
) -> list[dict]:
    """The records of `path`, each a dict for which `valid(record)` holds.

    Args:
        valid: the check of one record (already known to be a dict).
        needs: what each line needs, for the error (e.g. "'image' and 'instruction' keys").
        example: the shape of a line, for the missing-file error (e.g. "{'image': ..., 'instruction': ...}").
        what: the records' name, for the empty-file error ("training records", "sequences").
        name: how the missing-file error names the path (e.g. "data.path train.jsonl"); None: the path.

    Raises:
        ConfigError: the file does not exist. InputError: a line is not JSON or lacks what it needs, or no records.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{name or path} does not exist; give a JSONL file of {example} lines")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}:{number}: not JSON ({err.msg})") from None
        if not isinstance(record, dict) or not valid(record):
            raise InputError(f"{path}:{number}: each line needs {needs}")
        records.append(record)
    if not records:
        raise InputError(f"{path}: no {what}")
    return records
