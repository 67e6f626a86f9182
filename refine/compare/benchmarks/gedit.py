"""GEdit-Bench from a local copy of its Hugging Face dataset, scored with its 0-10 SC / PQ / O scheme.

Example (a small folder in the dataset's layout; the judge is only contacted when scoring):
    >>> import tempfile
    >>> from refine.compare.benchmarks.gedit import GEditBench
    >>> from refine.testing.benchmark_folders import write_gedit_folder
    >>> root = write_gedit_folder(tempfile.mkdtemp(), cases=2)
    >>> judge = {"backend": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "Qwen2.5-VL-72B-Instruct"}}
    >>> [(c.category, c.instructions[0]) for c in GEditBench(str(root), judge).cases()]    # GEdit-Bench-EN
    [('color_alter', 'make the square green'), ('subject-add', 'make the square blue')]

Expected layout: the dataset `stepfun-ai/GEdit-Bench` in any form it reaches a disk
(`refine.compare.benchmarks.hub`): a `huggingface-cli download ... --local-dir` snapshot (Arrow
shards `data-0000N-of-0000M.arrow`, or parquet under `data/` or the hub's auto-converted
`default/train/`), or a `load_dataset(...).save_to_disk(path)` folder (`split`, default "train").

One row per case with the dataset's columns: `key` (case id), `task_type` (one of the 11
categories in `GROUPS`; others are kept with a warning), `instruction`, `instruction_language`
("en" or "cn"), `input_image_raw` (the input GEdit-Bench's own generation script edits) and
`input_image` (the source its evaluator compares with, `{key}_SRCIMG.png`), each an image struct
with PNG/JPEG `bytes`, and `Intersection_exist`. Cases are edited from `input_image_raw`; a case
without it falls back to `input_image` with a warning (`image_column` forces one column), and a
case with neither fails when the benchmark is built, naming it. `language` picks
GEdit-Bench-EN (default), -CN or both; `intersection_only` keeps the "intersection" subset.

Scoring (VIEScore, as GEdit-Bench does, on the configured VLM; see `mllm.py` for the reading):
semantic consistency SC = min(success, over-editing), each rated 0-10 from the source and the
edited image; perceptual quality PQ = min(naturalness, artifacts), each rated 0-10 from the
edited image alone; overall O = sqrt(SC * PQ). Metrics: `overall`, `semantics`, `quality`.
Images are read from the parquet files only when a case is edited or shown.

`judge.scheme: official` asks VIEScore's own prompts instead (read from `judge.prompts`, the user's
checkout of GEdit-Bench/VIEScore: see `protocols.py`): one query for SC over [source, edit] and one
for PQ over [edit], each answered ``{"score": [a, b], ...}``; the same min / min / sqrt rule, and the
"all" row averages per task type, then across types (`aggregate`), on the intersection subset when
`intersection_only` is set.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal, Sequence

from PIL import Image

from refine.compare.benchmarks.base import Case, CaseScore, stable_hash
from refine.compare.benchmarks.folder import FolderBenchmark, geometric_mean, minimum, missing_images, warn_unknown
from refine.compare.benchmarks.hub import FORMS, find_tables, has_image, image_bytes
from refine.compare.benchmarks.mllm import Criterion
from refine.compare.benchmarks.protocols import parse_score_list, read_viescore_prompts, viescore_queries
from refine.errors import InputError
from refine.images import load_image
from refine.types import EditResult

LAYOUT = f"expected {FORMS} with columns key, task_type, instruction, instruction_language, input_image_raw or input_image"
REQUIRED = ("key", "task_type", "instruction", "instruction_language")
IMAGE_COLUMNS = ("input_image_raw", "input_image")  # the official input first (GEdit-Bench's generate_image_example.py)
GROUPS = (
    "background_change", "color_alter", "material_alter", "motion_change", "ps_human", "style_change",
    "subject-add", "subject-remove", "subject-replace", "text_change", "tone_transfer",
)

CRITERIA = (
    Criterion(
        "success",
        "The first image is the original and the second is the result of editing it with this instruction: "
        "{instruction}\nRate from 0 to 10 how successfully the edit carries out the instruction "
        "(0: the instruction is not followed at all; 10: it is followed exactly).",
    ),
    Criterion(
        "overediting",
        "The first image is the original and the second is the result of editing it with this instruction: "
        "{instruction}\nRate from 0 to 10 how well the edit avoids changes the instruction did not ask for "
        "(0: the image was changed far beyond the instruction, 10: nothing else changed).",
    ),
    Criterion(
        "naturalness",
        "Rate from 0 to 10 how natural this image looks: plausible lighting, shadows, perspective and "
        "proportions (0: clearly unnatural, 10: indistinguishable from a real, well-made image).",
    ),
    Criterion(
        "artifacts",
        "Rate from 0 to 10 how free this image is of artifacts such as distortions, blur, noise, seams, "
        "duplicated parts or garbled text (0: severe artifacts, 10: none at all).",
    ),
)


class GEditBench(FolderBenchmark):
    """The `gedit` benchmark kind (see the module docstring for the layout and the scheme)."""

    name = "gedit"
    metrics = ("overall", "semantics", "quality")
    scale = (0.0, 10.0)
    version = 1
    criteria = CRITERIA
    layout = LAYOUT
    aggregate = "categories"  # the "all" row averages per task type, then across types, as the official scripts do

    def __init__(
        self,
        root: str,
        judge: dict[str, Any] | None = None,
        language: Literal["en", "cn", "all"] = "en",
        intersection_only: bool = False,
        image_column: str | None = None,
        split: str = "train",
    ) -> None:
        super().__init__(root, judge)
        self.language, self.intersection_only, self.image_column = language, intersection_only, image_column
        self._tables = find_tables(self.root, "gedit", split)
        self._columns: dict[tuple[int, str], Any] = {}  # (table, image column) -> its cells
        self._rows = self._read_index()  # fails here, before any compute, on a wrong layout or a missing image
        self._by_id = {row["_id"]: row for row in self._rows}
        if self.judge_spec.scheme == "official":
            self.official_prompts = read_viescore_prompts(self.judge_spec.prompts)

    def _read_index(self) -> list[dict[str, Any]]:
        rows = []
        preferred = (self.image_column,) if self.image_column else IMAGE_COLUMNS
        for number, table in enumerate(self._tables):
            missing = [c for c in REQUIRED if c not in table.columns]
            images = [c for c in preferred if c in table.columns]
            if missing or not images:
                lacks = ", ".join(missing + ([] if images else [" or ".join(preferred)]))
                raise InputError(f"gedit: {table.name} lacks the column(s) {lacks}; {LAYOUT}")
            extra = [c for c in ("Intersection_exist", "intersection_exist") if c in table.columns]
            for index, row in enumerate(table.read([*REQUIRED, *extra[:1]]).to_pylist()):
                row.update(_table=number, _index=index, _images=images, _intersection=bool(row.get(extra[0])) if extra else True)
                rows.append(row)
        keep = [
            r for r in rows
            if (self.language == "all" or r["instruction_language"] == self.language) and (r["_intersection"] or not self.intersection_only)
        ]
        if not keep:
            raise InputError(f"gedit root {str(self.root)!r} has no cases with language={self.language!r}; use language: en, cn or all")
        keys = [f"{r['key']}-{r['instruction_language']}" if self.language == "all" else str(r["key"]) for r in keep]
        if len(set(keys)) != len(keys):
            raise InputError(f"gedit root {str(self.root)!r} repeats case keys; each `key` must be unique per language")
        for key, row in zip(keys, keep):
            row["_id"] = key
        self._pick_image_columns(keep)
        warn_unknown("gedit", "task_type", [r["task_type"] for r in keep], GROUPS)
        return keep

    def _pick_image_columns(self, rows: list[dict[str, Any]]) -> None:
        """Per case, the first image column (input_image_raw, then input_image) that holds bytes; preflight."""
        present: dict[tuple[int, str], list[bool]] = {}

        def has(row: dict[str, Any], column: str) -> bool:
            where = (row["_table"], column)
            if where not in present:
                # the column is read once (parquet: its bytes; Arrow: memory-mapped) and kept for editing
                self._columns[where] = self._tables[row["_table"]].read([column]).column(0)
                present[where] = has_image(self._columns[where])
            return present[where][row["_index"]]

        for row in rows:
            row["_column"] = next((c for c in row["_images"] if has(row, c)), None)
        empty = [r["_id"] for r in rows if r["_column"] is None]
        if empty:
            raise missing_images("gedit", empty, f"image bytes in {' or '.join(rows[0]['_images'])}")
        if self.image_column is None:
            fallback = [r["_id"] for r in rows if r["_column"] != IMAGE_COLUMNS[0]]
            if fallback:
                warnings.warn(
                    f"gedit: {len(fallback)} case(s) have no input_image_raw (GEdit-Bench's official input) and are "
                    f"edited from input_image instead, e.g. {fallback[0]!r}", UserWarning, stacklevel=4,
                )

    @property
    def key(self) -> str:
        data = [str(self.root.resolve()), [(r["_id"], r["_column"]) for r in self._rows]]
        return f"gedit-{self.language}-{stable_hash(data)}"

    def cases(self) -> list[Case]:
        return [
            Case(
                id=row["_id"], category=str(row["task_type"]), source=lambda row=row: self._image(row, row["_column"]),
                instructions=[str(row["instruction"])],
                meta={"task_type": row["task_type"], "language": row["instruction_language"], "key": str(row["key"])},
            )
            for row in self._rows
        ]

    def _image(self, row: dict[str, Any], column: str) -> Image.Image:
        if (row["_table"], column) not in self._columns:
            self._columns[(row["_table"], column)] = self._tables[row["_table"]].read([column]).column(0)
        data = image_bytes(self._columns[(row["_table"], column)][row["_index"]].as_py())
        if not data:
            raise InputError(f"gedit case {row['_id']!r}: its {column} has no image bytes")
        return load_image(data, name=f"gedit {row['_id']}")

    def evaluator_source(self, case: Case) -> Image.Image:
        """The source image GEdit-Bench's evaluator compares with (`{key}_SRCIMG.png` is `input_image`)."""
        row = self._by_id[case.id]
        column = "input_image" if "input_image" in self._tables[row["_table"]].columns else row["_column"]
        try:
            return self._image(row, column)
        except InputError:
            return case.source_image()

    def score_once(self, items: Sequence[tuple[Case, list[EditResult]]]) -> list[CaseScore]:
        if self.official_prompts is not None:
            return self._score_viescore(items)
        sources = [case.source_image() for case, _ in items]
        outputs = [results[-1].image for _, results in items]
        instructions = [case.instructions[0] for case, _ in items]
        rated = {}
        for criterion in CRITERIA:
            images = [[s, o] for s, o in zip(sources, outputs)] if criterion.name in ("success", "overediting") else [[o] for o in outputs]
            rated[criterion.name] = self.judge.rate(criterion, images, instructions)
        scores = []
        for i in range(len(items)):
            values = {name: rated[name][i][0] for name in rated}
            sc = minimum(values["success"], values["overediting"])
            pq = minimum(values["naturalness"], values["artifacts"])
            overall = geometric_mean(sc, pq)
            details = {"ratings": values, "judge": {name: rated[name][i][1] for name in rated}}
            scores.append(CaseScore({"overall": overall, "semantics": sc, "quality": pq}, None, details))
        return scores

    def _score_viescore(self, items: Sequence[tuple[Case, list[EditResult]]]) -> list[CaseScore]:
        """VIEScore with its authors' prompts: two generated answers per case, each a list of two 0-10 scores."""
        queries = [viescore_queries(self.official_prompts, case.instructions[0]) for case, _ in items]
        outputs = [results[-1].image for _, results in items]
        sc_answers = self.judge.ask([[case.source_image(), out] for (case, _), out in zip(items, outputs)], [q[0] for q in queries])
        pq_answers = self.judge.ask([[out] for out in outputs], [q[1] for q in queries])
        scores = []
        for sc_text, pq_text in zip(sc_answers, pq_answers):
            sc_list, pq_list = _two_scores(sc_text), _two_scores(pq_text)
            sc = min(sc_list) if sc_list else None
            pq = min(pq_list) if pq_list else None
            ratings = {
                "success": sc_list[0] if sc_list else None, "overediting": sc_list[1] if sc_list else None,
                "naturalness": pq_list[0] if pq_list else None, "artifacts": pq_list[1] if pq_list else None,
            }
            details = {"ratings": ratings, "answers": {"sc": sc_text, "pq": pq_text}}
            scores.append(CaseScore({"overall": geometric_mean(sc, pq), "semantics": sc, "quality": pq}, None, details))
        return scores


def _two_scores(text: str) -> list[float] | None:
    """Two scores in [0, 10] from a VIEScore answer, else None (unparseable: the case gets no score, never a guess)."""
    values = parse_score_list(text)
    return values[:2] if values and len(values) >= 2 and all(0 <= v <= 10 for v in values[:2]) else None
