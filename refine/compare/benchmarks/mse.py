"""MSE-Bench (VINCIE's five-turn editing sessions) from its hub dataset, judged turn by turn until the first failure.

Example (a small copy in the dataset's layout; the judge is only contacted when scoring):
    >>> import tempfile
    >>> from refine.compare.benchmarks.mse import MSEBench
    >>> from refine.testing.benchmark_folders import write_mse_folder
    >>> root = write_mse_folder(tempfile.mkdtemp())
    >>> judge = {"backend": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "m"}}
    >>> case = MSEBench(str(root), judge).cases()[0]
    >>> case.id, case.turns, case.instructions[0]
    ('0', 5, "Replace the snowman's top hat with a red Santa hat.")

Expected layout: the dataset `leigangqu/MSE-Bench` in any form it reaches a disk
(`refine.compare.benchmarks.hub`: the hub snapshot's parquet `data/train-*.parquet`, Arrow
shards, or a `save_to_disk` folder), 100 sessions with the fields `index`, `image` (the source,
an image struct with bytes), `context` (the five turn instructions), `operation` (one edit type per
turn), `description_source`, `description_target` (the expected result of each turn) and
`summary`. The case id is `index`, the category the first turn's operation; the descriptions go
to the case meta. A session without image bytes fails when the benchmark is built, named.

Scoring ("refine-judge": VINCIE's rule with our own wording of its question): for every turn k,
prompt following `pf` (does the turn-k image do what instruction k asks, given the turn-(k-1)
image) and consistency `cc` (are the parts instruction k does not touch unchanged), both rated
0-10 and reported x10. A turn passes when both ratings are strictly above `threshold` (6, as in
VINCIE's compute_score.py); scoring stops at the first failing turn, so later turns count as
failed. `overall` is the percentage of the session's turns passed; `pf` and `cc` are the means
over the turns judged.
"""

from __future__ import annotations

from typing import Any, Sequence

from PIL import Image

from refine.compare.benchmarks.base import Case, CaseScore, default_request, stable_hash
from refine.compare.benchmarks.folder import FolderBenchmark, mean, missing_images
from refine.compare.benchmarks.hub import FORMS, find_tables, has_image, image_bytes
from refine.compare.benchmarks.mllm import Criterion
from refine.errors import InputError
from refine.images import load_image
from refine.types import EditRequest, EditResult

LAYOUT = f"expected {FORMS} with the fields index, image, context, operation, description_target"
REQUIRED = ("index", "context", "operation")
OPTIONAL = ("description_source", "description_target", "summary")

_PAIR = "The first image is before an edit and the second is after it. The edit instruction was: {instruction}\n"
CRITERIA = (
    Criterion(
        "pf",
        _PAIR + "Rate from 0 to 10 how well the second image fulfils the instruction (0: not at all, 10: exactly).",
    ),
    Criterion(
        "cc",
        _PAIR + "Rate from 0 to 10 how well the parts of the image the instruction does not touch stay unchanged "
        "(0: everything changed, 10: perfectly consistent).",
    ),
)


class MSEBench(FolderBenchmark):
    """The `mse-bench` benchmark kind (see the module docstring for the layout and the scheme)."""

    name = "mse-bench"
    metrics = ("overall", "pf", "cc")
    scale = (0.0, 100.0)
    version = 1
    criteria = CRITERIA
    layout = LAYOUT

    def __init__(self, root: str, judge: dict[str, Any] | None = None, threshold: float = 6.0, split: str = "train") -> None:
        super().__init__(root, judge)
        self.threshold = threshold
        self._tables = find_tables(self.root, "mse-bench", split)
        self._columns: dict[int, Any] = {}
        self._rows = self._read_index()

    def _read_index(self) -> list[dict[str, Any]]:
        rows, empty = [], []
        for number, table in enumerate(self._tables):
            missing = [c for c in (*REQUIRED, "image") if c not in table.columns]
            if missing:
                raise InputError(f"mse-bench: {table.name} lacks the column(s) {', '.join(missing)}; {LAYOUT}")
            present = has_image(table.read(["image"]).column(0))
            fields = [*REQUIRED, *(c for c in OPTIONAL if c in table.columns)]
            for index, row in enumerate(table.read(fields).to_pylist()):
                row.update(_table=number, _index=index, _id=str(row["index"]))
                if not row["context"]:
                    raise InputError(f"mse-bench: session {row['_id']} has an empty context; each needs its turn instructions")
                if not present[index]:
                    empty.append(row["_id"])
                rows.append(row)
        if empty:
            raise missing_images("mse-bench", empty, "image bytes")
        if len({r["_id"] for r in rows}) != len(rows):
            raise InputError(f"mse-bench root {str(self.root)!r} repeats an index; each session's index must be unique")
        return rows

    @property
    def key(self) -> str:
        return f"mse-{stable_hash([str(self.root.resolve()), [(r['_id'], r['context']) for r in self._rows]])}"

    def cases(self) -> list[Case]:
        return [
            Case(
                id=row["_id"], category=str(row["operation"][0]), source=lambda row=row: self._image(row),
                instructions=[str(text).strip() for text in row["context"]],
                meta={
                    "task_types": [str(op) for op in row["operation"]], "index": row["index"],
                    "description_target": list(row.get("description_target") or []),
                    "description_source": row.get("description_source") or "", "summary": row.get("summary") or "",
                },
            )
            for row in self._rows
        ]

    def _image(self, row: dict[str, Any]) -> Image.Image:
        if row["_table"] not in self._columns:
            self._columns[row["_table"]] = self._tables[row["_table"]].read(["image"]).column(0)
        return load_image(image_bytes(self._columns[row["_table"]][row["_index"]].as_py()), name=f"mse-bench {row['_id']}")

    def request(self, case: Case, turn: int, image: Image.Image, seed: int) -> EditRequest:
        task_types = case.meta["task_types"]
        return default_request(case, turn, image, seed, benchmark=self.name, task_type=task_types[min(turn, len(task_types) - 1)])

    def score_once(self, items: Sequence[tuple[Case, list[EditResult]]]) -> list[CaseScore]:
        images, texts, owner = [], [], []
        for i, (case, results) in enumerate(items):
            previous = case.source_image()
            for k, result in enumerate(results):
                images.append([previous, result.image])
                texts.append(case.instructions[k])
                owner.append(i)
                previous = result.image
        # every turn is judged in one batch; the stop-at-first-failure rule is applied afterwards
        pf, cc = (self.judge.rate(c, images, texts) for c in CRITERIA)
        turns: list[list[dict[str, Any]]] = [[] for _ in items]
        for i, (p, _), (c, _) in zip(owner, pf, cc):
            turns[i].append({"pf": p, "cc": c})
        scores = []
        for (case, _), judged in zip(items, turns):
            turn_scores, passed_turns, state = [], 0, "running"  # running -> failed | unknown
            for turn in judged:
                if state != "running":
                    # after a failure the session counts as failed at every later turn (VINCIE's
                    # success rate at turn k); after an unreadable rating nothing more is known
                    turn_scores.append({"overall": 0.0 if state == "failed" else None, "pf": None, "cc": None})
                    continue
                if turn["pf"] is None or turn["cc"] is None:
                    state = "unknown"
                    turn_scores.append({"overall": None, "pf": None, "cc": None})
                    continue
                passed = turn["pf"] > self.threshold and turn["cc"] > self.threshold
                turn_scores.append({"overall": 100.0 if passed else 0.0, "pf": 10.0 * turn["pf"], "cc": 10.0 * turn["cc"]})
                passed_turns += passed
                state = "running" if passed else "failed"
            judged_rows = [t for t in turn_scores if t["pf"] is not None]
            summary = {
                "overall": None if state == "unknown" else 100.0 * passed_turns / case.turns,
                "pf": mean([t["pf"] for t in judged_rows]) if judged_rows else None,
                "cc": mean([t["cc"] for t in judged_rows]) if judged_rows else None,
            }
            scores.append(CaseScore(summary, turn_scores, {"threshold": self.threshold, "passed_turns": passed_turns}))
        return scores
