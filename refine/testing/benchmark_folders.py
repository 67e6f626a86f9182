"""Small benchmark folders in the layouts of GEdit-Bench, ImgEdit and EdiVal, written for tests.

Example:
    >>> import tempfile
    >>> from refine.testing.benchmark_folders import write_imgedit_folder
    >>> root = write_imgedit_folder(tempfile.mkdtemp(), cases=3)
    >>> sorted(p.name for p in root.iterdir())
    ['basic_edit.json', 'original_images']

Each writer draws coloured-square images (32x32 by default) and instructions in that benchmark's
own format, so the real loaders are exercised end to end:
* `write_gedit_folder`: `data/train-00000-of-00001.parquet` with the dataset's columns (`key`,
  `task_type`, `instruction`, `instruction_language`, `input_image` as a {bytes, path} struct,
  `Intersection_exist`), half English, half Chinese;
* `write_imgedit_folder`: `basic_edit.json` + `original_images/<category>/<n>.jpg`;
* `write_edival_folder`: `oai_instruction_generation_output.csv` (1-, 2- and 3-turn prefix rows per
  image, list literals as in the release) + `input_images_resize_512/<i>_input_raw.png`, or the
  images as `input_images_resize_512.zip` with `zipped=True`.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, DatasetDict, Features, Image as HFImage, Value
from PIL import Image

_COLOURS = [(220, 30, 30), (30, 180, 60), (30, 60, 220), (230, 210, 40), (150, 60, 200)]
_NAMES = ["red", "green", "blue", "yellow", "purple"]


def _image(i: int, size: int) -> Image.Image:
    image = Image.new("RGB", (size, size), (200, 200, 200))
    image.paste(_COLOURS[i % len(_COLOURS)], (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    return image


def _png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


GEDIT_FORMS = ("parquet", "auto-parquet", "arrow", "save_to_disk")


def write_gedit_folder(
    root: str | Path, cases: int = 4, size: int = 32, form: str = "parquet", raw: bool = True, empty: Sequence[int] = ()
) -> Path:
    """A GEdit-Bench copy holding `cases` English and `cases` Chinese rows, in one of `GEDIT_FORMS`.

    `parquet`: `data/train-00000-of-00001.parquet` (a hub snapshot); `auto-parquet`: the hub's
    converted `default/train/0000.parquet`; `arrow`: hub-snapshot Arrow shards
    `train/data-0000N-of-00002.arrow`; `save_to_disk`: a DatasetDict folder as
    `load_dataset(...).save_to_disk(root)` writes it. `raw` adds `input_image_raw` (twice the
    size of `input_image`, as the release's raw inputs are larger); rows in `empty` (row numbers,
    English first) have no image at all.
    """
    root = Path(root)
    tasks = ["color_alter", "subject-add", "background_change", "style_change"]
    rows: dict[str, list] = {k: [] for k in ("key", "task_type", "instruction", "instruction_language", "input_image", "input_image_raw", "Intersection_exist")}
    for language in ("en", "cn"):
        for i in range(cases):
            number = len(rows["key"])
            rows["key"].append(f"{i:04x}{'a' * 28}")
            rows["task_type"].append(tasks[i % len(tasks)])
            text = f"make the square {_NAMES[(i + 1) % len(_NAMES)]}" if language == "en" else f"把方块变成{_NAMES[(i + 1) % len(_NAMES)]}"
            rows["instruction"].append(text)
            rows["instruction_language"].append(language)
            missing = number in empty
            rows["input_image"].append(None if missing else {"bytes": _png(_image(i, size)), "path": f"{i}.png"})
            rows["input_image_raw"].append(None if missing else {"bytes": _png(_image(i, 2 * size)), "path": f"{i}_raw.png"})
            rows["Intersection_exist"].append(i % 2 == 0)
    if not raw:
        del rows["input_image_raw"]
    if form in ("parquet", "auto-parquet"):
        image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        table = pa.table({k: (pa.array(v, type=image_type) if k.startswith("input_image") else pa.array(v)) for k, v in rows.items()})
        path = root / ("data/train-00000-of-00001.parquet" if form == "parquet" else "default/train/0000.parquet")
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        return root
    features = Features({k: (HFImage() if k.startswith("input_image") else Value("bool" if k == "Intersection_exist" else "string")) for k in rows})
    dataset = Dataset.from_dict(rows, features=features)
    if form == "save_to_disk":
        DatasetDict({"train": dataset}).save_to_disk(str(root), num_shards={"train": 2})
    elif form == "arrow":
        saved = root / ".save_to_disk"
        dataset.save_to_disk(str(saved), num_shards=2)
        (root / "train").mkdir(parents=True, exist_ok=True)
        for shard in saved.glob("data-*.arrow"):
            shutil.move(str(shard), root / "train" / shard.name)
        shutil.rmtree(saved)
    else:
        raise ValueError(f"form must be one of {GEDIT_FORMS}, got {form!r}")
    return root


def write_imgedit_folder(root: str | Path, cases: int = 4, size: int = 32) -> Path:
    """An ImgEdit basic-bench folder: `basic_edit.json` and JPEG originals under `original_images/`."""
    root = Path(root)
    types = [("add", "for_add"), ("remove", "animal"), ("alter", "daily object"), ("style", "style")]
    index = {}
    for i in range(cases):
        edit_type, folder = types[i % len(types)]
        relative = f"{folder}/{i:09d}.jpg"
        path = root / "original_images" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        _image(i, size).save(path, format="JPEG", quality=95)
        index[str(100 + i)] = {"id": relative, "prompt": f"Change the square to {_NAMES[(i + 1) % len(_NAMES)]}.", "edit_type": edit_type}
    (root / "basic_edit.json").write_text(json.dumps(index, indent=4))
    return root


def write_edival_folder(root: str | Path, cases: int = 3, size: int = 32, zipped: bool = False) -> Path:
    """An EdiVal folder: the instruction CSV (prefix rows for 1..3 turns) and the input images."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tasks = ["color_alter", "subject_add", "background_change"]
    images = {f"{i}_input_raw.png": _png(_image(i, size)) for i in range(cases)}
    with open(root / "oai_instruction_generation_output.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_index", "turns", "task_type", "instructions", "format_instructions", "bg_consistency"])
        for i in range(cases):
            steps = [
                f"Change the color of square to {_NAMES[(i + 1) % len(_NAMES)]}",
                '"Add circle on the left of square"',  # the release quotes some instructions twice
                "Change the background to park, remain the square unchanged",
            ]
            for turns in (1, 2, 3):
                writer.writerow([i, turns, repr(tasks[:turns]), repr(steps[:turns]), repr(steps[:turns]), True])
    if zipped:
        with zipfile.ZipFile(root / "input_images_resize_512.zip", "w") as archive:
            for name, data in images.items():
                archive.writestr(name, data)
    else:
        folder = root / "input_images_resize_512"
        folder.mkdir(exist_ok=True)
        for name, data in images.items():
            (folder / name).write_bytes(data)
    return root
