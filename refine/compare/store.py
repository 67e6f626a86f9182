"""The on-disk cache of a comparison: one folder per (entry, case, seed), written atomically.

Example:
    >>> import tempfile
    >>> from PIL import Image
    >>> from refine.compare.store import EditRecord, Store, TurnRecord
    >>> store = Store(tempfile.mkdtemp())
    >>> record = EditRecord("case/1", 0, [TurnRecord("add a dot", "add a red dot", 0.5)])
    >>> store.save_edit("entrykey", record, [Image.new("RGB", (4, 4), "red")])
    >>> loaded = store.load_edit("entrykey", "case/1", 0)
    >>> loaded.turns[0].instruction_used, store.load_images("entrykey", loaded)[0].getpixel((0, 0))
    ('add a red dot', (255, 0, 0))

Layout: `<root>/<entry key>/<case folder>/s<seed>/` holds `turn<k>.png` (the output of each turn),
`edit.json` (what was executed, the refiner steps, timings) and `score-<judge key>.json` (the
benchmark's scores under one judge setting). `edit.json` is written last and atomically (temp file
+ `os.replace`), so its presence means the case is finished: an interrupted run leaves at most
stray images behind, which the resumed run overwrites. What is read is verified: an edit whose
images do not decode (a copy cut short, a full disk) or a record or score that does not parse
counts as missing and is recomputed, so a damaged file never needs deleting by hand. Keys are computed by the caller (entry
fingerprint, benchmark data and judge identity), so adding an entry or changing the judge touches
only what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from refine.compare.benchmarks.base import CaseScore
from refine.errors import InputError
from refine.images import load_image
from refine.types import EditResult, Step


@dataclass
class TurnRecord:
    """One turn of one case: the benchmark's instruction, what the editor executed, how long it took."""

    instruction: str
    instruction_used: str
    seconds: float
    steps: list[dict[str, Any]] = field(default_factory=list)  # Step.to_json() of every refiner step
    image: str = ""  # file name inside the case folder


@dataclass
class EditRecord:
    case_id: str
    seed: int
    turns: list[TurnRecord]

    @property
    def seconds(self) -> float:
        return sum(turn.seconds for turn in self.turns)

    def to_json(self) -> dict[str, Any]:
        return {"case_id": self.case_id, "seed": self.seed, "turns": [asdict(t) for t in self.turns]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "EditRecord":
        return cls(data["case_id"], data["seed"], [TurnRecord(**t) for t in data["turns"]])


class Store:
    """Read and write finished edits and scores under `root` (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._verified: set[tuple[str, int, int]] = set()  # (path, size, mtime) of images that decoded

    def case_dir(self, entry_key: str, case_id: str, seed: int) -> Path:
        return self.root / entry_key / safe_name(case_id) / f"s{seed}"

    # -- edits -------------------------------------------------------------------------------

    def load_edit(self, entry_key: str, case_id: str, seed: int) -> EditRecord | None:
        path = self.case_dir(entry_key, case_id, seed) / "edit.json"
        data = _read_json(path)
        if data is None:
            return None
        try:
            record = EditRecord.from_json(data)
        except (KeyError, TypeError, ValueError):
            return None  # a record of another layout or a damaged one: recompute
        folder = path.parent
        if not all(self._readable(folder / t.image) for t in record.turns):
            return None  # images removed or damaged (a full disk, a copy cut short): recompute
        return record

    def save_edit(self, entry_key: str, record: EditRecord, images: Sequence[Image.Image]) -> None:
        folder = self.case_dir(entry_key, record.case_id, record.seed)
        folder.mkdir(parents=True, exist_ok=True)
        for k, (turn, image) in enumerate(zip(record.turns, images)):
            turn.image = f"turn{k}.png"
            _atomic_write(folder / turn.image, lambda f, im=image: im.save(f, format="PNG"), binary=True)
        for stale in folder.glob("score-*.json"):  # scores of the edit this one replaces
            stale.unlink()
        _atomic_write(folder / "edit.json", lambda f: json.dump(record.to_json(), f, indent=1, default=_jsonable))

    def _readable(self, path: Path) -> bool:
        """Whether `path` decodes as an image; each (path, size, mtime) is decoded once per Store."""
        try:
            stat = path.stat()
        except OSError:
            return False
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key in self._verified:
            return True
        try:
            load_image(path)
        except InputError:
            return False
        self._verified.add(key)
        return True

    def image_paths(self, entry_key: str, record: EditRecord) -> list[Path]:
        folder = self.case_dir(entry_key, record.case_id, record.seed)
        return [folder / t.image for t in record.turns]

    def load_images(self, entry_key: str, record: EditRecord) -> list[Image.Image]:
        return [load_image(p) for p in self.image_paths(entry_key, record)]

    def load_results(self, entry_key: str, record: EditRecord) -> list[EditResult]:
        """The cached turns as `EditResult`s (what a benchmark's judge consumes)."""
        results = []
        for turn, image in zip(record.turns, self.load_images(entry_key, record)):
            steps = [Step(**step) for step in turn.steps]
            results.append(EditResult(image=image, instruction=turn.instruction_used, steps=steps))
        return results

    # -- scores ------------------------------------------------------------------------------

    def load_score(self, entry_key: str, case_id: str, seed: int, judge_key: str) -> CaseScore | None:
        data = _read_json(self.case_dir(entry_key, case_id, seed) / f"score-{judge_key}.json")
        try:
            return None if data is None else CaseScore.from_json(data)
        except (KeyError, TypeError, AttributeError):
            return None  # a damaged score: score again

    def save_score(self, entry_key: str, case_id: str, seed: int, judge_key: str, score: CaseScore) -> None:
        folder = self.case_dir(entry_key, case_id, seed)
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(folder / f"score-{judge_key}.json", lambda f: json.dump(score.to_json(), f, indent=1, default=_jsonable))


def safe_name(text: str) -> str:
    """`text` as a portable file name; a short hash keeps names that had to change distinct."""
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]", "_", text)[:80] or "_"
    if cleaned != text:
        cleaned += "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return cleaned


def _jsonable(value: Any) -> Any:
    """Refiner steps and judge details may hold numpy scalars, paths or tuples-as-keys: keep them readable."""
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()  # numpy / torch scalars
        except (ValueError, TypeError):
            pass
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # missing or damaged: the caller recomputes it


def _atomic_write(path: Path, write, binary: bool = False) -> None:
    """Write through a temp file in the same folder, then rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
