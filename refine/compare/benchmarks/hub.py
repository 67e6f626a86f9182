"""A Hugging Face dataset on disk in any form a user has: parquet files, Arrow shards, `save_to_disk` folders.

Example (a `save_to_disk` DatasetDict, as `load_dataset(...).save_to_disk(path)` writes it):
    >>> import tempfile
    >>> from datasets import Dataset, DatasetDict
    >>> from refine.compare.benchmarks.hub import find_tables
    >>> root = tempfile.mkdtemp()
    >>> DatasetDict({"train": Dataset.from_dict({"key": ["a", "b"]})}).save_to_disk(root)
    >>> [(t.name, t.columns, t.read(["key"]).column("key").to_pylist()) for t in find_tables(root, "gedit")]
    [('train', ['key'], ['a', 'b'])]

The forms, tried in this order (the first that exists wins, so a folder holding both a
`save_to_disk` copy and parquet files is read once):
1. a `save_to_disk` folder: `dataset_dict.json` (a DatasetDict: the `split` is read, default
   "train") or `state.json` (one Dataset), read with `datasets.load_from_disk`;
2. Arrow shards `data-0000N-of-0000M.arrow` anywhere under the root (what a hub snapshot of a
   `save_to_disk` upload holds), each opened memory-mapped with `datasets.Dataset.from_file`;
3. parquet: `<root>/data/*.parquet`, `<root>/*.parquet`, the hub's auto-converted
   `<root>/default/<split>/*.parquet`, then any parquet file under the root.
Each form gives `HubTable`s that read only the columns asked for, so listing cases never loads
image bytes and memory-mapped Arrow never copies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Dataset, DatasetDict, load_from_disk

from refine.errors import InputError

FORMS = (
    "<root>/data/*.parquet (or default/train/*.parquet), Arrow shards <root>/.../data-0000N-of-0000M.arrow, "
    "or a datasets save_to_disk folder (<root>/dataset_dict.json)"
)


@dataclass
class HubTable:
    """One table of a dataset on disk: a name for messages, its column names, a column reader."""

    name: str
    columns: list[str]
    reader: Callable[[list[str]], pa.Table]

    def read(self, columns: Sequence[str]) -> pa.Table:
        """The table restricted to `columns` (all rows, in file order)."""
        return self.reader(list(columns))


def find_tables(root: str | Path, benchmark: str, split: str = "train") -> list[HubTable]:
    """Every table of the dataset under `root` in the first form found (see the module docstring)."""
    root = Path(root)
    for finder in (_saved, _arrow_shards, _parquet):
        tables = finder(root, benchmark, split)
        if tables:
            return tables
    raise InputError(f"{benchmark} root {str(root)!r} holds no dataset; expected {FORMS}")


def image_bytes(value: Any) -> bytes | None:
    """The encoded image of a cell (a {bytes, path} struct or raw bytes), None when it has none."""
    data = value.get("bytes") if isinstance(value, dict) else value
    return bytes(data) if data else None


def has_image(column: pa.ChunkedArray) -> list[bool]:
    """Per row: does this image column hold encoded bytes? (Checked without decoding or copying them.)"""
    if pa.types.is_struct(column.type):
        column = pc.struct_field(column, "bytes")  # a null struct gives a null field, unlike .field()
    return [bool(n) for n in pc.binary_length(column).to_pylist()]


def _from_dataset(dataset: Dataset, name: str) -> HubTable:
    # with_format("arrow") slices the memory-mapped table: no image is decoded or copied
    return HubTable(name, list(dataset.column_names), lambda cols: dataset.select_columns(cols).with_format("arrow")[:])


def _saved(root: Path, benchmark: str, split: str) -> list[HubTable]:
    if not ((root / "dataset_dict.json").is_file() or (root / "state.json").is_file()):
        return []
    try:
        loaded = load_from_disk(str(root))
    except (OSError, ValueError) as err:  # datasets raises both for a damaged folder
        raise InputError(f"{benchmark}: {root} is not a readable save_to_disk folder ({err})") from None
    if isinstance(loaded, DatasetDict):
        if split not in loaded:
            raise InputError(f"{benchmark}: {root} has no split {split!r}; it has {', '.join(loaded)} (set `split`)")
        return [_from_dataset(loaded[split], split)]
    return [_from_dataset(loaded, root.name)]


def _arrow_shards(root: Path, benchmark: str, split: str) -> list[HubTable]:
    shards = sorted(root.rglob("data-*-of-*.arrow"))
    in_split = [p for p in shards if split in p.relative_to(root).parts[:-1]]
    tables = []
    for path in in_split or shards:
        try:
            dataset = Dataset.from_file(str(path))
        except (OSError, ValueError, pa.ArrowInvalid) as err:
            raise InputError(f"{benchmark}: {path} is not a readable Arrow shard ({err})") from None
        tables.append(_from_dataset(dataset, str(path.relative_to(root))))
    return tables


def _parquet(root: Path, benchmark: str, split: str) -> list[HubTable]:
    files: list[Path] = []
    for pattern in ("data/*.parquet", "*.parquet", f"default/{split}/*.parquet", "**/*.parquet"):
        files = sorted(root.glob(pattern))
        if files:
            break
    # the hub names split files data/<split>-0000N-of-0000M.parquet or puts them in a <split>/ folder
    in_split = [p for p in files if split in p.relative_to(root).parts[:-1] or p.name.startswith(f"{split}-")]
    files = in_split or files
    tables = []
    for path in files:
        try:
            columns = pq.read_schema(path).names
        except (OSError, pa.ArrowInvalid) as err:
            raise InputError(f"{benchmark}: {path} is not a readable parquet file ({err})") from None
        tables.append(HubTable(str(path.relative_to(root)), columns, lambda cols, path=path: pq.read_table(path, columns=cols)))
    return tables
