"""EdiVal-Agent (multi-turn) from a local folder, scored per turn for instruction following and consistency.

Example (a small folder in the release's layout; the judge is only contacted when scoring):
    >>> import tempfile
    >>> from refine.compare.benchmarks.edival import EdiValBench
    >>> from refine.testing.benchmark_folders import write_edival_folder
    >>> root = write_edival_folder(tempfile.mkdtemp(), cases=1)
    >>> judge = {"backend": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "Qwen2.5-VL-72B-Instruct"}}
    >>> case = EdiValBench(str(root), judge).cases()[0]
    >>> case.turns, case.instructions[1]
    (3, 'Add circle on the left of square')

Expected layout (the EdiVal-Agent release: its instruction CSV and the 512x512 input images)::

    <root>/
      oai_instruction_generation_output.csv
      input_images_resize_512/<image_index>_input_raw.(png|jpg)     or input_images_resize_512.zip

The CSV has one row per (image_index, turns) prefix (a UTF-8 BOM is skipped, as pandas does); the rows whose `turns` equals `turns`
(default 3) hold a full sequence: `instructions` and `task_type` are Python list literals with
one entry per turn. The case id is the `image_index`, the category the last turn's task type (one
of EdiVal's nine, `TASK_TYPES`; others are kept with a warning). Cases whose image is missing
fail when the benchmark is built, named in one line.

Scoring (EdiVal's two axes, on an MLLM instead of its detector tools, as percentages like its
leaderboard): per turn k, instruction following IF_k = 100 * P(Yes) for "was instruction k
carried out?" from the images before and after turn k, and content consistency CC_k = 10 x a
0-10 rating of how well everything the instructions so far did not ask to change is preserved,
from the original and the turn-k image. Per sequence `if` and `cc` are the means over turns and
`overall` = sqrt(if * cc) (EdiVal-O is the geometric mean of IF and CC).
"""

from __future__ import annotations

import ast
import csv
import zipfile
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from refine.compare.benchmarks.base import Case, CaseScore, default_request, stable_hash
from refine.compare.benchmarks.folder import FolderBenchmark, geometric_mean, mean, missing_images, warn_unknown
from refine.compare.benchmarks.mllm import Criterion
from refine.errors import InputError
from refine.images import load_image
from refine.types import EditRequest, EditResult

LAYOUT = (
    "expected <root>/oai_instruction_generation_output.csv (image_index, turns, task_type, instructions) and "
    "<root>/input_images_resize_512/<image_index>_input_raw.png|jpg (or that folder as a .zip)"
)
COLUMNS = ("image_index", "turns", "task_type", "instructions")
TASK_TYPES = (
    "subject_add", "subject_remove", "subject_replace", "color_alter", "material_alter", "text_change",
    "count_change", "position_change", "background_change",
)  # the nine of the released CSV

CRITERIA = (
    Criterion(
        "if",
        "The first image is before an edit and the second is after it. Was this instruction carried out in the "
        "second image: {instruction}",
        kind="yesno",
    ),
    Criterion(
        "cc",
        "The first image is the original and the second is the result after these edits, in order: {instruction}\n"
        "Rate from 0 to 10 how well everything the edits did not ask to change is preserved: the other objects, "
        "their appearance and positions, and the background unless an edit changed it (0: unrecognisable, "
        "10: perfectly preserved).",
    ),
)


class EdiValBench(FolderBenchmark):
    """The `edival` benchmark kind (see the module docstring for the layout and the scheme)."""

    name = "edival"
    metrics = ("overall", "if", "cc")
    scale = (0.0, 100.0)
    version = 1
    criteria = CRITERIA
    layout = LAYOUT

    def __init__(
        self,
        root: str,
        judge: dict[str, Any] | None = None,
        csv_file: str = "oai_instruction_generation_output.csv",
        images: str = "input_images_resize_512",
        turns: int = 3,
    ) -> None:
        super().__init__(root, judge)
        self.csv_file, self.images, self.n_turns = csv_file, images, turns
        self._zip: zipfile.ZipFile | None = None
        self._rows = self._read_index()

    # -- layout --------------------------------------------------------------------------------

    def _read_index(self) -> list[dict[str, Any]]:
        path = self.root / self.csv_file
        if not path.is_file():
            raise InputError(f"edival: no {self.csv_file} in {str(self.root)!r}; {LAYOUT}")
        # utf-8-sig: a CSV saved by Excel starts with a BOM, which pandas (the official scripts' reader) skips too
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"edival: {self.csv_file} lacks the column(s) {', '.join(missing)}; {LAYOUT}")
            rows = [row for row in reader if row["turns"].strip() == str(self.n_turns)]
        if not rows:
            raise InputError(f"edival: {self.csv_file} has no rows with turns == {self.n_turns}; set `turns` to its sequence length")
        names = self._image_names()
        out, missing = [], []
        for row in rows:
            index = row["image_index"].strip()
            instructions = [_clean(text) for text in _literal_list(row["instructions"], index, "instructions")]
            task_types = [str(t) for t in _literal_list(row["task_type"], index, "task_type")]
            if len(instructions) != self.n_turns:
                raise InputError(f"edival: image {index} lists {len(instructions)} instructions for turns == {self.n_turns}")
            image = next((n for n in (f"{index}_input_raw.png", f"{index}_input_raw.jpg") if n in names), None)
            if image is None:
                missing.append(index)
            out.append({"id": index, "instructions": instructions, "task_types": task_types, "image": image})
        if missing:
            raise missing_images("edival", missing, f"<image_index>_input_raw.png|jpg in {self.images!r}")
        warn_unknown("edival", "task_type", [t for row in out for t in row["task_types"]], TASK_TYPES)
        return out

    def _image_names(self) -> set[str]:
        folder = self.root / self.images
        if folder.is_dir():
            return {p.name for p in folder.iterdir()}
        archive = folder if folder.suffix == ".zip" else folder.with_suffix(".zip")
        if archive.is_file():
            try:
                self._zip = zipfile.ZipFile(archive)
            except zipfile.BadZipFile:
                raise InputError(f"edival: {archive} is not a zip file") from None
            return {Path(n).name for n in self._zip.namelist()}
        raise InputError(f"edival: neither {self.images!r} nor {self.images}.zip exists in {str(self.root)!r}; {LAYOUT}")

    def _image(self, name: str) -> Image.Image:
        if self._zip is None:
            return load_image(self.root / self.images / name)
        member = next(n for n in self._zip.namelist() if Path(n).name == name)
        return load_image(self._zip.read(member), name=name)

    # -- Benchmark -----------------------------------------------------------------------------

    @property
    def key(self) -> str:
        return f"edival-t{self.n_turns}-{stable_hash([str(self.root.resolve()), [(r['id'], r['instructions']) for r in self._rows]])}"

    def cases(self) -> list[Case]:
        return [
            Case(
                id=row["id"], category=row["task_types"][-1], source=lambda name=row["image"]: self._image(name),
                instructions=row["instructions"], meta={"task_types": row["task_types"], "image_index": row["id"]},
            )
            for row in self._rows
        ]

    def request(self, case: Case, turn: int, image: Image.Image, seed: int) -> EditRequest:
        # each turn's request names that turn's task type (the case's category is the last one's)
        return default_request(case, turn, image, seed, benchmark=self.name, task_type=case.meta["task_types"][turn])

    def score_once(self, items: Sequence[tuple[Case, list[EditResult]]]) -> list[CaseScore]:
        follow_images, follow_texts, keep_images, keep_texts, owner = [], [], [], [], []
        for i, (case, results) in enumerate(items):
            previous = case.source_image()
            for k, result in enumerate(results):
                follow_images.append([previous, result.image])
                follow_texts.append(case.instructions[k])
                keep_images.append([case.source_image(), result.image])
                keep_texts.append(" ".join(f"({n + 1}) {text}" for n, text in enumerate(case.instructions[: k + 1])))
                owner.append((i, k))
                previous = result.image
        follows = self.judge.rate(CRITERIA[0], follow_images, follow_texts)
        keeps = self.judge.rate(CRITERIA[1], keep_images, keep_texts)
        turn_scores: list[list[dict]] = [[] for _ in items]
        details: list[list[dict]] = [[] for _ in items]
        for (i, _), (yes, d_if), (rating, d_cc) in zip(owner, follows, keeps):
            value_if = None if yes is None else 100.0 * yes
            value_cc = None if rating is None else 10.0 * rating
            overall = geometric_mean(value_if, value_cc)
            turn_scores[i].append({"overall": overall, "if": value_if, "cc": value_cc})
            details[i].append({"if": d_if, "cc": d_cc})
        scores = []
        for turns, detail in zip(turn_scores, details):
            mean_if, mean_cc = mean([t["if"] for t in turns]), mean([t["cc"] for t in turns])
            overall = geometric_mean(mean_if, mean_cc)
            scores.append(CaseScore({"overall": overall, "if": mean_if, "cc": mean_cc}, turns, {"turns": detail}))
        return scores


def _literal_list(text: str, index: str, column: str) -> list:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise InputError(f"edival: image {index}: column {column!r} is not a Python list literal: {text[:60]!r}") from None
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _clean(text: Any) -> str:
    """The release wraps some instructions in extra double quotes: drop them."""
    return str(text).strip().strip('"').strip()

