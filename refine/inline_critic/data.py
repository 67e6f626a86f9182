"""Training data of the inline critic: (source, instruction, target) edit pairs from ShapeEdit or local files.

Example:
    >>> from itertools import islice
    >>> from refine.inline_critic.config import DataConfig
    >>> from refine.inline_critic.data import edit_pair_stream
    >>> pair = next(edit_pair_stream(DataConfig(kind="shapes", seed=0)))
    >>> pair.source.size, pair.target.size, isinstance(pair.instruction, str)
    ((32, 32), (32, 32), True)

Local layouts (images are read with `refine.images.load_image`, so any format/mode works):

* folder (`data: {kind: folder, path: edits/}`): one sub-folder per pair,
      edits/0001/source.png   edits/0001/target.png   edits/0001/instruction.txt
  (`source.*` / `target.*` with any image extension; instruction.txt is UTF-8, stripped).
* jsonl (`data: {kind: jsonl, path: edits/pairs.jsonl}`): one JSON object per line,
      {"source": "img/0001_src.png", "target": "img/0001_tgt.png", "instruction": "make it blue"}
  paths relative to the JSONL's folder; `source_image` / `target_image` are accepted too, so the
  files written by `refine.shapes.data.export_split` load as they are.

The last `validation_cases` pairs of a local dataset are held out for validation; ShapeEdit draws
its validation pairs from a stream seeded with `validation_seed` instead.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterator

from PIL import Image

from refine.errors import InputError
from refine.images import load_image
from refine.inline_critic.config import DataConfig

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class EditPair:
    """One supervised edit: `source` --`instruction`--> `target` (RGB images)."""

    source: Image.Image
    instruction: str
    target: Image.Image


def edit_pair_stream(config: DataConfig) -> Iterator[EditPair]:
    """An endless stream of training pairs (local datasets are reshuffled every epoch)."""
    if config.kind == "shapes":
        from refine.shapes.data import training_stream

        for case in training_stream(config.seed, **config.options):
            yield EditPair(case.source_image, case.instruction, case.target_image)
        return
    pairs = local_pairs(config)[: -config.validation_cases or None]
    if not pairs:
        raise InputError(f"{config.path}: no training pairs left after holding out validation_cases={config.validation_cases}")
    rng = random.Random(config.seed)
    while True:
        order = list(range(len(pairs)))
        rng.shuffle(order)
        for index in order:
            yield pairs[index].load()


def validation_pairs(config: DataConfig) -> list[EditPair]:
    """The held-out pairs the validation flow-matching loss is measured on (fixed for a config)."""
    if config.validation_cases == 0:
        return []
    if config.kind == "shapes":
        from refine.shapes.data import training_stream

        stream = training_stream(config.validation_seed, **config.options)
        return [EditPair(c.source_image, c.instruction, c.target_image) for c in islice(stream, config.validation_cases)]
    return [pair.load() for pair in local_pairs(config)[-config.validation_cases :]]


@dataclass(frozen=True)
class _LazyPair:
    source: Path
    instruction: str
    target: Path

    def load(self) -> EditPair:
        return EditPair(load_image(self.source), self.instruction, load_image(self.target))


def local_pairs(config: DataConfig) -> list[_LazyPair]:
    """Index a folder or JSONL dataset (images are loaded lazily); `InputError` naming what is wrong."""
    path = Path(config.path or "")
    if config.kind == "folder":
        return _folder_pairs(path)
    if config.kind == "jsonl":
        return _jsonl_pairs(path)
    raise InputError(f"data.kind={config.kind!r} has no local files; use 'folder' or 'jsonl'")


def _find_image(folder: Path, stem: str) -> Path:
    for suffix in _IMAGE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise InputError(f"{folder}: no {stem}.png (or .jpg/.webp/...) in this pair folder")


def _folder_pairs(root: Path) -> list[_LazyPair]:
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; data.kind=folder expects <path>/<case>/source.png, target.png, instruction.txt")
    pairs = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        text = folder / "instruction.txt"
        if not text.is_file():
            raise InputError(f"{folder}: missing instruction.txt")
        instruction = text.read_text(encoding="utf-8").strip()
        if not instruction:
            raise InputError(f"{text}: empty instruction")
        pairs.append(_LazyPair(_find_image(folder, "source"), instruction, _find_image(folder, "target")))
    if not pairs:
        raise InputError(f"{root}: no pair folders (expected <path>/<case>/source.png, target.png, instruction.txt)")
    return pairs


def _jsonl_pairs(path: Path) -> list[_LazyPair]:
    if not path.is_file():
        raise InputError(f"{path}: no such JSONL file")
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            source = record.get("source", record.get("source_image"))
            target = record.get("target", record.get("target_image"))
            instruction = str(record["instruction"]).strip()
        except (json.JSONDecodeError, KeyError, AttributeError) as err:
            raise InputError(f"{path}:{number}: not a pair record ({err}); need source, target, instruction") from None
        if not source or not target or not instruction:
            raise InputError(f"{path}:{number}: source, target and a non-empty instruction are required")
        pairs.append(_LazyPair(path.parent / source, instruction, path.parent / target))
    if not pairs:
        raise InputError(f"{path}: no records")
    return pairs


def batches(stream: Iterator[EditPair], batch_size: int) -> Iterator[list[EditPair]]:
    """Group a pair stream into lists of `batch_size`."""
    while True:
        batch = list(islice(stream, batch_size))
        if not batch:
            return
        yield batch
