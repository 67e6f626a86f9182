"""Small benchmark folders in the layouts of GEdit-Bench, ImgEdit, EdiVal, KRIS-Bench, RISEBench and MSE-Bench, for tests.

Example:
    >>> import tempfile
    >>> from refine.testing.benchmark_folders import write_imgedit_folder
    >>> root = write_imgedit_folder(tempfile.mkdtemp(), cases=3)
    >>> sorted(p.name for p in root.iterdir())
    ['Basic', 'singleturn']

Each writer draws coloured-square images (32x32 by default) and instructions in that benchmark's
own format, so the real loaders are exercised end to end:
* `write_gedit_folder`: the dataset's columns (`key`, `task_type`, `instruction`,
  `instruction_language`, `input_image` and `input_image_raw` as {bytes, path} structs,
  `Intersection_exist`), half English, half Chinese, as parquet, Arrow shards or `save_to_disk`;
* `write_imgedit_folder`: `Basic/basic_edit.json` + `singleturn/<category>/<n>.jpg` (or flat, or a tar);
* `write_edival_folder`: `oai_instruction_generation_output.csv` (1-, 2- and 3-turn prefix rows per
  image, list literals as in the release) + `input_images_resize_512/<i>_input_raw.png`, or the
  images as `input_images_resize_512.zip` with `zipped=True`;
* `write_kris_folder`, `write_rise_folder`, `write_mse_folder`: KRIS-Bench, RISEBench and MSE-Bench
  (see their docstrings).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tarfile
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


IMGEDIT_LAYOUTS = ("official", "flat", "tar")


def write_imgedit_folder(
    root: str | Path, cases: int = 4, size: int = 32, layout: str = "official", index: dict | None = None
) -> Path:
    """An ImgEdit basic-bench folder in one of `IMGEDIT_LAYOUTS`, with JPEG sources drawn for every `id`.

    `official`: the repository's `Benchmark/` (`Basic/basic_edit.json`) with the hub's
    `Benchmark.tar` unpacked (`singleturn/<category>/<n>.jpg`); `flat`: `basic_edit.json` +
    `original_images/`; `tar`: `Basic/basic_edit.json` beside the packed `Benchmark.tar`.
    `index` replaces the generated cases (e.g. a slice of the real `basic_edit.json`).
    """
    root = Path(root)
    if index is None:
        types = [("add", "for_add"), ("remove", "animal"), ("adjust", "daily object"), ("style", "style")]
        index = {}
        for i in range(cases):
            edit_type, folder = types[i % len(types)]
            prompt = f"Change the square to {_NAMES[(i + 1) % len(_NAMES)]}."
            index[str(100 + i)] = {"id": f"{folder}/{i:09d}.jpg", "prompt": prompt, "edit_type": edit_type}
    images = {}
    for i, item in enumerate(index.values()):
        buffer = io.BytesIO()
        _image(i, size).save(buffer, format="JPEG", quality=95)
        images.setdefault(item["id"], buffer.getvalue())  # cases may share a source
    json_path = root / ("basic_edit.json" if layout == "flat" else "Basic/basic_edit.json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(index, indent=4))
    if layout == "tar":
        with tarfile.open(root / "Benchmark.tar", "w") as archive:
            for relative, data in images.items():
                info = tarfile.TarInfo(f"Benchmark/singleturn/{relative}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        return root
    folder = root / ("original_images" if layout == "flat" else "singleturn")
    for relative, data in images.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    return root


def write_edival_folder(
    root: str | Path,
    cases: int = 3,
    size: int = 32,
    zipped: bool = False,
    bom: bool = False,
    csv_text: str | None = None,
    missing: Sequence[str] = (),
) -> Path:
    """An EdiVal folder: the instruction CSV (prefix rows for 1..3 turns) and the input images.

    `csv_text` replaces the generated CSV (e.g. a slice of the released one; images are drawn for
    its `image_index`es); `bom` writes it with a UTF-8 BOM (as Excel saves CSVs); `missing` image
    indices get no image; `zipped` packs the images as `input_images_resize_512.zip`.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if csv_text is None:
        tasks = ["color_alter", "subject_add", "background_change"]
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["image_index", "turns", "task_type", "instructions", "format_instructions", "bg_consistency"])
        for i in range(cases):
            steps = [
                f"Change the color of square to {_NAMES[(i + 1) % len(_NAMES)]}",
                '"Add circle on the left of square"',  # the release quotes some instructions twice
                "Change the background to park, remain the square unchanged",
            ]
            for turns in (1, 2, 3):
                writer.writerow([i, turns, repr(tasks[:turns]), repr(steps[:turns]), repr(steps[:turns]), True])
        csv_text = buffer.getvalue()
    indices = list(dict.fromkeys(row["image_index"] for row in csv.DictReader(io.StringIO(csv_text))))
    (root / "oai_instruction_generation_output.csv").write_text(csv_text, encoding="utf-8-sig" if bom else "utf-8")
    images = {f"{index}_input_raw.png": _png(_image(n, size)) for n, index in enumerate(indices) if index not in missing}
    if zipped:
        with zipfile.ZipFile(root / "input_images_resize_512.zip", "w") as archive:
            for name, data in images.items():
                archive.writestr(f"input_images_resize_512/{name}", data)
    else:
        folder = root / "input_images_resize_512"
        folder.mkdir(exist_ok=True)
        for name, data in images.items():
            (folder / name).write_bytes(data)
    return root


# A slice of KRIS-Bench's annotation files (mercurystraw/Kris_Bench, see tests/compare/data/kris/PROVENANCE.md)
KRIS_SLICE = {
    "chemistry": {
        "1": {"ori_img": "1.png", "gt_img": "", "ins_en": "Add a piece of solid sodium to the water",
              "explain_en": "A large amount of heat will be released, causing the water to boil"},
        "2": {"ori_img": "2.jpg", "gt_img": "", "ins_en": "Color change of red cabbage pH indicator when dropped into the cup",
              "explain_en": "In the image, it changes to yellow or green when mixed with soap solution"},
    },
    "color_change": {
        "1": {"ori_img": "1.jpg", "gt_img": "", "ins_en": "Change this green pepper to yellow.", "explain_en": ""},
    },
    "multi-element_composition": {
        "1": {"ori_img": ["1-1.jpg", "1-2.jpg"], "gt_img": "",
              "ins_en": "Replace the clothing of the person in the image with the ones I provided.", "explain_en": ""},
    },
    "temporal_prediction": {
        "1": {"ori_img": ["1-2.jpg", "1-3.jpg", "1-4.jpg"], "gt_img": "1-1.jpg",
              "ins_en": "Based on the images from Frame 2, Frame 3, and Frame 4, predict what the image of Frame 1 in the "
              "sequence should look like. Generate the frame.", "explain_en": ""},
    },
}


def write_kris_folder(root: str | Path, annotations: dict | None = None, size: int = 32, missing: Sequence[str] = ()) -> Path:
    """A KRIS-Bench checkout: `KRIS_Bench/<category>/annotation.json` and every `ori_img`/`gt_img` drawn.

    `annotations` maps category -> annotation dict (default `KRIS_SLICE`); files named in `missing`
    are not drawn.
    """
    root = Path(root)
    n = 0
    for category, annotation in (annotations or KRIS_SLICE).items():
        folder = root / "KRIS_Bench" / category
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "annotation.json").write_text(json.dumps(annotation, indent=2, ensure_ascii=False), encoding="utf-8")
        for item in annotation.values():
            names = item["ori_img"] if isinstance(item["ori_img"], list) else [item["ori_img"]]
            for name in [*names, *([item["gt_img"]] if item.get("gt_img") else [])]:
                if name not in missing:
                    _image(n, size).save(folder / name, format="PNG" if name.endswith(".png") else "JPEG")
                n += 1
    return root


# A slice of RISEBench's data/data_total.json (PhoenixZ810/RISEBench, see tests/compare/data/rise/PROVENANCE.md)
RISE_SLICE = [
    {"index": "temporal_reasoning_1", "category": "temporal_reasoning",
     "instruction": "Draw what it will look like after being kept in a daily environment for a year.",
     "image": "temporal_reasoning_images/1.png", "reference": "Rotten, blackened banana."},
    {"index": "causal_reasoning_1", "category": "causal_reasoning", "instruction": "Draw what it will look like after being bitten by people.",
     "image": "causal_reasoning_images/1.png",
     "reference": "Apple with a visible bite mark, exposing its pale, juicy flesh beneath the red skin."},
    {"index": "logical_reasoning_1", "category": "logical_reasoning",
     "instruction": "This is an image of a maze, where black represents obstacles and white represents walkable paths. "
     "Draw the path from the red dot to the green dot in blue.",
     "image": "logical_reasoning_images/1.jpg", "reference_img": "logical_reasoning_images/1_ref.png"},
]


def write_rise_folder(root: str | Path, cases: list | None = None, size: int = 32, missing: Sequence[str] = ()) -> Path:
    """A RISEBench checkout: `data/data_total.json` and every `image`/`reference_img` drawn (`cases` default `RISE_SLICE`)."""
    root = Path(root)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    cases = RISE_SLICE if cases is None else cases
    (data / "data_total.json").write_text(json.dumps(cases, indent=4, ensure_ascii=False), encoding="utf-8")
    for n, item in enumerate(cases):
        for name in (item["image"], item.get("reference_img")):
            if name and name not in missing:
                (data / name).parent.mkdir(parents=True, exist_ok=True)
                _image(n, size).save(data / name, format="PNG" if name.endswith(".png") else "JPEG")
    return root


# MSE-Bench's documented example session (ByteDance-Seed/VINCIE benchmark/README.md, see tests/compare/data/mse/PROVENANCE.md)
MSE_SLICE = [{
    "index": 0,
    "summary": (
        "The aim is to enhance the snowman's whimsical appearance through a series of diverse editing "
        "operations that introduce new elements, modify existing attributes, and alter perspectives to create "
        "a more interesting and visually appealing scene."
    ),
    "description_source": (
        "The image features a cheerful snowman with a carrot nose, smiling face, and eyes made of coal. It is "
        "adorned with a brown top hat and a patterned scarf with green and orange decorations matching its "
        "gloves. The snowman is set against a plain white background, showcasing its simple and whimsical "
        "design."
    ),
    "context": [
        "Replace the snowman's top hat with a red Santa hat.",
        "Change the color of the snowman's scarf to red and white stripes.",
        "Remove the snowman's left mitten to reveal a twig hand holding a candy cane.",
        "Replace the background with a snowy forest scene.",
        "Adjust the snowman's orientation to face slightly towards the right.",
    ],
    "operation": [
        "object_replace",
        "attribute_change",
        "remove",
        "background_replace",
        "orientation",
    ],
    "description_target": [
        "The snowman retains its smile but now has a Santa hat adorned with a white pom-pom, adding a festive holiday touch.",
        "The snowman's scarf color is now changed to a vibrant red and white stripe pattern, providing a more contrasting and lively visual.",
        "The snowman's left mitten is removed, revealing a twig-like hand holding a candy cane, adding a playful element.",
        "The snowman is now positioned in a snowy forest backdrop with spruce trees, lending a natural winter setting to the image.",
        "The snowman is turned slightly to the right, as if facing towards a nearby bird perched on its twig arm, inviting a sense of interaction.",
    ],
}]


def write_mse_folder(
    root: str | Path, sessions: list | None = None, copies: int = 2, size: int = 32, form: str = "parquet", empty: Sequence[int] = ()
) -> Path:
    """An MSE-Bench copy: `copies` renumbered copies of `sessions` (default `MSE_SLICE`) with drawn images.

    `form` as in `write_gedit_folder` ("parquet": the hub snapshot's `data/train-00000-of-00001.parquet`,
    "arrow", "save_to_disk"); sessions whose `index` is in `empty` have no image.
    """
    root = Path(root)
    rows: dict[str, list] = {k: [] for k in ("image", "index", "summary", "description_source", "context", "operation", "description_target")}
    for copy in range(copies):
        for n, session in enumerate(sessions or MSE_SLICE):
            index = copy * len(sessions or MSE_SLICE) + n
            for field in rows:
                if field != "image":
                    rows[field].append(index if field == "index" else session[field])
            rows["image"].append(None if index in empty else {"bytes": _png(_image(index, size)), "path": f"{index}.png"})
    if form == "parquet":
        image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        table = pa.table({k: (pa.array(v, type=image_type) if k == "image" else pa.array(v)) for k, v in rows.items()})
        (root / "data").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / "data" / "train-00000-of-00001.parquet")
        return root
    strings = [Value("string")]  # a list feature, as the hub dataset's context/operation/description_target
    features = Features({
        "image": HFImage(), "index": Value("int64"), "summary": Value("string"), "description_source": Value("string"),
        "context": strings, "operation": strings, "description_target": strings,
    })
    dataset = Dataset.from_dict(rows, features=features)
    if form == "save_to_disk":
        DatasetDict({"train": dataset}).save_to_disk(str(root))
    elif form == "arrow":
        dataset.save_to_disk(str(root / "train"))
        for extra in ("state.json", "dataset_info.json"):
            (root / "train" / extra).unlink()
    else:
        raise ValueError(f"form must be parquet, arrow or save_to_disk, got {form!r}")
    return root
