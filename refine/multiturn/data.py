"""Multi-turn training and evaluation sequences: a position-addressed stream and held-out subsets.

Example:
    >>> from refine.multiturn.data import SequenceSource, evaluation_sequences, training_sequences
    >>> from itertools import islice
    >>> first = [s.id for s in islice(training_sequences(seed=3), 2)]
    >>> first == [s.id for s in islice(training_sequences(seed=3), 2)], first[0]
    (True, 'train-mt-3-0')
    >>> source = SequenceSource("shapes", seed=3)
    >>> [r.meta["sequence_id"] for r in source.take(1, 2)]     # position-addressed: resume = same sequences
    ['train-mt-3-1', 'train-mt-3-2']
    >>> [r.meta["sequence_id"] for r in evaluation_sequences("shapes-mt-val", 2)]
    ['mtval-000', 'mtval-060']

ShapeEdit's multi-turn stream: sequence n of seed s is drawn by `refine.shapes.data.make_sequence`
from a generator seeded by ("train-mt", s, n), so it depends only on (s, n); a draw with any turn
whose (source, target) belongs to a benchmark or validation split is drawn again from the same
generator (`refine.shapes.data.reserved_case_keys`). Iteration k of a run uses stream positions
``[k * S, (k + 1) * S)`` whether or not it was resumed.

JSONL data (`kind: jsonl`): one object per line with `image` (a path relative to the file) and
`instructions` (a list, one per turn), and optionally `metas` (one dict per turn) and other keys
(they go to the sequence meta). The file is visited in a seeded order, reshuffled every pass.
"""

from __future__ import annotations

import random
from itertools import islice
from pathlib import Path
from typing import Iterator

from refine.errors import ConfigError, InputError
from refine.jsonl import read_jsonl
from refine.rollout.multiturn import SequenceRequest
from refine.shapes.data import MT_TURNS, ShapeSequence, case_key, load_split, make_sequence, reserved_case_keys, seeded_rng


def sequence_request(sequence: ShapeSequence) -> SequenceRequest:
    """A `SequenceRequest` of a ShapeEdit sequence: turn metas carry each turn's exact case, the meta the sequence."""
    metas = []
    for turn, case in enumerate(sequence.cases):
        meta = case.to_request().meta
        meta.update({"turn": turn, "sequence_id": sequence.id})
        metas.append(meta)
    return SequenceRequest(
        sequence.source_image,
        sequence.instructions,
        metas=metas,
        meta={"sequence_id": sequence.id, "shapes_sequence": sequence.to_dict()},
    )


def training_sequences(seed: int, turns: int = MT_TURNS, size: int = 32) -> Iterator[ShapeSequence]:
    """An endless stream of fresh K-turn ShapeEdit sequences (see the module docstring)."""
    reserved = reserved_case_keys()
    index = 0
    while True:
        rng = seeded_rng("train-mt", seed, index)
        for _ in range(100):
            sequence = make_sequence(rng, f"train-mt-{seed}-{index}", turns, size)
            if not any(case_key(case) in reserved for case in sequence.cases):
                break
        else:
            raise InputError(f"100 draws of training sequence {index} all repeat a benchmark case")
        yield sequence
        index += 1


class SequenceSource:
    """Position-addressed training sequences: `take(position, count)` is the same on every call."""

    def __init__(self, kind: str = "shapes", *, seed: int = 0, path: str | None = None, turns: int = MT_TURNS, size: int = 32) -> None:
        if kind not in ("shapes", "jsonl"):
            raise ConfigError(f"data.kind={kind!r}; use 'shapes' or 'jsonl'")
        if kind == "jsonl" and not path:
            raise ConfigError("data.kind=jsonl needs data.path=/path/to/sequences.jsonl")
        self.kind, self.seed, self.turns, self.size = kind, seed, turns, size
        self.path = Path(path) if path else None
        self._records = _read_jsonl(self.path) if kind == "jsonl" else None
        self._iterator: Iterator[SequenceRequest] | None = None
        self._position = 0

    def take(self, position: int, count: int) -> list[SequenceRequest]:
        if self._iterator is None or position < self._position:
            self._iterator, self._position = self._stream(), 0  # rewind (resume, tests)
        if position > self._position:
            next(islice(self._iterator, position - self._position - 1, None), None)
            self._position = position
        out = list(islice(self._iterator, count))
        self._position += len(out)
        return out

    def _stream(self) -> Iterator[SequenceRequest]:
        if self.kind == "shapes":
            return (sequence_request(s) for s in training_sequences(self.seed, self.turns, self.size))
        return self._jsonl()

    def _jsonl(self) -> Iterator[SequenceRequest]:
        records, epoch = self._records or [], 0
        while True:
            order = list(range(len(records)))
            random.Random(f"{self.seed}/{epoch}").shuffle(order)
            for index in order:
                yield _record_request(records[index], self.path.parent)
            epoch += 1


def evaluation_sequences(split: str, count: int) -> list[SequenceRequest]:
    """`count` sequences spread evenly over a multi-turn ShapeEdit split (shapes-mt-val for tuning) or a JSONL file."""
    if split.endswith(".jsonl"):
        records = _read_jsonl(Path(split))
        count = min(count, len(records))
        return [_record_request(records[i * len(records) // count], Path(split).parent) for i in range(count)]
    items = load_split(split)
    if not items or not isinstance(items[0], ShapeSequence):
        raise ConfigError(f"eval.benchmark={split!r} is not a multi-turn split; use shapes-mt-val (tuning) or a JSONL file")
    count = min(count, len(items))
    return [sequence_request(items[i * len(items) // count]) for i in range(count)]


def _read_jsonl(path: Path) -> list[dict]:
    return read_jsonl(
        path,
        valid=lambda r: isinstance(r.get("instructions"), list) and "image" in r,
        needs="'image' and an 'instructions' list",
        example="{'image': ..., 'instructions': [...]}",
        what="sequences",
    )


def _record_request(record: dict, root: Path) -> SequenceRequest:
    image = Path(record["image"])
    meta = {k: v for k, v in record.items() if k not in ("image", "instructions", "metas")}
    return SequenceRequest(image if image.is_absolute() else root / image, record["instructions"], metas=record.get("metas") or [], meta=meta)
