"""GEdit-Bench from a local copy of its Hugging Face dataset, scored with its 0-10 SC / PQ / O scheme.

Example (a small folder in the dataset's layout; the judge is only contacted when scoring):
    >>> import tempfile
    >>> from refine.compare.benchmarks.gedit import GEditBench
    >>> from refine.testing.benchmark_folders import write_gedit_folder
    >>> root = write_gedit_folder(tempfile.mkdtemp(), cases=2)
    >>> judge = {"backend": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "Qwen2.5-VL-72B-Instruct"}}
    >>> [(c.category, c.instructions[0]) for c in GEditBench(str(root), judge).cases()]    # GEdit-Bench-EN
    [('color_alter', 'make the square green'), ('subject-add', 'make the square blue')]

Expected layout (what `huggingface-cli download stepfun-ai/GEdit-Bench --repo-type dataset
--local-dir data/GEdit-Bench` produces)::

    <root>/
      data/*.parquet        (parquet files directly in <root> work too)

with one row per case and the dataset's columns: `key` (case id), `task_type` (one of the 11
categories: background_change, color_alter, material_alter, motion_change, ps_human,
style_change, subject-add, subject-remove, subject-replace, text_change, tone_transfer),
`instruction`, `instruction_language` ("en" or "cn"), `input_image` (an image struct with PNG/JPEG
`bytes`) and optionally `input_image_raw` and `Intersection_exist`. `language` picks
GEdit-Bench-EN (default), -CN or both; `intersection_only` keeps the "intersection" subset.

Scoring (VIEScore, as GEdit-Bench does, on the configured VLM; see `mllm.py` for the reading):
semantic consistency SC = min(success, over-editing), each rated 0-10 from the source and the
edited image; perceptual quality PQ = min(naturalness, artifacts), each rated 0-10 from the
edited image alone; overall O = sqrt(SC * PQ). Metrics: `overall`, `semantics`, `quality`.
Images are read from the parquet files only when a case is edited or shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

from PIL import Image

from refine.compare.benchmarks.base import Case, CaseScore, stable_hash
from refine.compare.benchmarks.folder import FolderBenchmark, geometric_mean, minimum
from refine.compare.benchmarks.mllm import Criterion
from refine.errors import InputError
from refine.images import load_image
from refine.types import EditResult

LAYOUT = "expected <root>/data/*.parquet (or <root>/*.parquet) with columns key, task_type, instruction, instruction_language, input_image"
REQUIRED = ("key", "task_type", "instruction", "instruction_language")

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

    def __init__(
        self,
        root: str,
        judge: dict[str, Any] | None = None,
        language: Literal["en", "cn", "all"] = "en",
        intersection_only: bool = False,
        image_column: str = "input_image",
    ) -> None:
        super().__init__(root, judge)
        self.language, self.intersection_only, self.image_column = language, intersection_only, image_column
        self._rows = self._read_index()  # fails here, before any compute, on a wrong layout
        self._columns: dict[Path, Any] = {}

    def _read_index(self) -> list[dict[str, Any]]:
        files = sorted((self.root / "data").glob("*.parquet")) or sorted(self.root.glob("*.parquet"))
        if not files:
            raise InputError(f"gedit root {str(self.root)!r} has no parquet files; {LAYOUT}")
        import pyarrow.parquet as pq

        rows = []
        for path in files:
            try:
                schema = pq.read_schema(path)
            except Exception as err:  # pyarrow raises several types for a non-parquet file
                raise InputError(f"gedit: {path} is not a readable parquet file ({err}); {LAYOUT}") from None
            missing = [c for c in (*REQUIRED, self.image_column) if c not in schema.names]
            if missing:
                raise InputError(f"gedit: {path.name} lacks the column(s) {', '.join(missing)}; {LAYOUT}")
            extra = [c for c in ("Intersection_exist", "intersection_exist") if c in schema.names]
            table = pq.read_table(path, columns=[*REQUIRED, *extra[:1]]).to_pylist()
            for index, row in enumerate(table):
                row.update(_file=path, _index=index, _intersection=bool(row.get(extra[0])) if extra else True)
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
        return keep

    @property
    def key(self) -> str:
        return f"gedit-{self.language}-{stable_hash([str(self.root.resolve()), [r['_id'] for r in self._rows]])}"

    def cases(self) -> list[Case]:
        return [
            Case(
                id=row["_id"], category=str(row["task_type"]), source=lambda row=row: self._image(row),
                instructions=[str(row["instruction"])],
                meta={"task_type": row["task_type"], "language": row["instruction_language"]},
            )
            for row in self._rows
        ]

    def _image(self, row: dict[str, Any]) -> Image.Image:
        path = row["_file"]
        if path not in self._columns:
            import pyarrow.parquet as pq

            self._columns[path] = pq.read_table(path, columns=[self.image_column]).column(0)
        value = self._columns[path][row["_index"]].as_py()
        data = value.get("bytes") if isinstance(value, dict) else value
        if not data:
            raise InputError(f"gedit case {row['_id']!r}: its {self.image_column} has no image bytes")
        return load_image(data, name=f"gedit {row['_id']}")

    def score(self, items: Sequence[tuple[Case, list[EditResult]]]) -> list[CaseScore]:
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
