"""Training and evaluation requests: a deterministic, resumable request source and a held-out subset.

Example:
    >>> from refine.edit_r1.config import DataConfig
    >>> from refine.edit_r1.data import RequestSource, evaluation_requests
    >>> source = RequestSource(DataConfig(kind="shapes", seed=3))
    >>> first = source.take(0, 2)
    >>> [r.instruction for r in first] == [r.instruction for r in RequestSource(DataConfig(seed=3)).take(0, 2)]
    True
    >>> source.take(1, 1)[0].instruction == first[1].instruction    # position-addressed: resume = same requests
    True
    >>> [r.meta["case_id"] for r in evaluation_requests("shapes-val", 3)]
    ['val-add-direct-00', 'val-recolor-direct-00', 'val-background-direct-00']

Online RL needs only (source image, instruction): the editor makes its own targets. Requests are
addressed by their position in the stream, so iteration k of a run uses requests
``[k * groups, (k + 1) * groups)`` whether or not the run was resumed, and process p of P rolls out
the p-th contiguous share of them.

JSONL data (`kind: jsonl`): one object per line with `image` (a path relative to the file, or
absolute), `instruction`, and optionally `task` / any other keys (they go to `EditRequest.meta`,
which rewards receive: the MLLM judge picks its task prompt from `meta["task"]`). The file is
visited in a seeded random order, reshuffled every pass.
"""

from __future__ import annotations

import random
from itertools import islice
from pathlib import Path
from typing import Iterator

from refine.edit_r1.config import DataConfig
from refine.errors import ConfigError
from refine.jsonl import read_jsonl
from refine.types import EditRequest


class RequestSource:
    """Position-addressed training requests (see the module docstring)."""

    def __init__(self, config: DataConfig) -> None:
        self.config = config
        self._position = 0
        self._iterator: Iterator[EditRequest] | None = None
        self._records: list[dict] | None = None
        if config.kind == "jsonl":
            self._records = read_jsonl(
                config.path,
                valid=lambda r: "image" in r and "instruction" in r,
                needs="'image' and 'instruction' keys",
                example="{'image': ..., 'instruction': ...}",
                what="training records",
                name=f"data.path {config.path}",
            )

    def take(self, position: int, count: int) -> list[EditRequest]:
        """The `count` requests starting at stream position `position`."""
        if position < self._position or self._iterator is None:
            self._iterator, self._position = self._stream(), 0  # rewind (rare: resume, tests)
        if position > self._position:
            next(islice(self._iterator, position - self._position - 1, None), None)  # skip ahead
            self._position = position
        requests = list(islice(self._iterator, count))
        self._position += len(requests)
        return requests

    def _stream(self) -> Iterator[EditRequest]:
        if self.config.kind == "shapes":
            from refine.shapes.data import training_stream

            try:
                cases = training_stream(self.config.seed, **self.config.options)
            except TypeError as err:
                raise ConfigError(f"data.options {self.config.options} do not fit refine.shapes.data.training_stream: {err}") from None
            # Each case's own seed is irrelevant here: the rollout draws its noise from sample seeds.
            return (case.to_request(seed=None) for case in cases)
        return self._jsonl_stream()

    def _jsonl_stream(self) -> Iterator[EditRequest]:
        records = self._records or []
        epoch = 0
        while True:
            order = list(range(len(records)))
            random.Random(f"{self.config.seed}/{epoch}").shuffle(order)
            for index in order:
                yield _record_request(records[index], Path(self.config.path).parent)
            epoch += 1


def _record_request(record: dict, root: Path) -> EditRequest:
    image = Path(record["image"])
    image = image if image.is_absolute() else root / image
    meta = {k: v for k, v in record.items() if k not in ("image", "instruction")}
    return EditRequest(image, record["instruction"], meta=meta)


def evaluation_requests(benchmark: str, cases: int, seed: int = 1234, categories: list[str] | None = None) -> list[EditRequest]:
    """`cases` held-out requests spread evenly over `benchmark` (a ShapeEdit split or a JSONL file).

    ShapeEdit's single-turn splits are ordered by category and phrasing, so an evenly spaced subset
    covers them all (or all of `categories`); request i gets seed ``seed + i``. Evaluate on the
    tuning split shapes-val: training-time scores steer runs.

    >>> [r.meta["case_id"] for r in evaluation_requests("shapes-val", 2, categories=["move"])]
    ['val-move-direct-00', 'val-move-indirect-00']
    """
    if benchmark.endswith(".jsonl"):
        records = _read_jsonl(Path(benchmark))
        chosen = [records[i * len(records) // min(cases, len(records))] for i in range(min(cases, len(records)))]
        return [
            _with_seed(_record_request(r, Path(benchmark).parent), seed + i) for i, r in enumerate(chosen)
        ]
    from refine.shapes.data import load_split

    split = load_split(benchmark)
    if categories:
        split = [case for case in split if case.category in set(categories)]
        if not split:
            raise ConfigError(f"eval.categories={categories} match no case of {benchmark}")
    count = min(cases, len(split))
    chosen = [split[i * len(split) // count] for i in range(count)]
    return [case.to_request(seed=seed + i) for i, case in enumerate(chosen)]


def _with_seed(request: EditRequest, seed: int) -> EditRequest:
    request.seed = seed
    return request
