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

`judge.scheme: official` asks VINCIE's own question instead (``prompt_template`` of the checkout's
``evaluation/compute_score.py``, see `mse_official`): turn k is judged from the first k instructions
and the source plus the outputs of turns 1..k, in one generated answer parsed by the script's rules;
the same pass rule and first-failure stop. The report's summary.json adds the script's per-turn
table (`official_summary`: success rate, prompt following, consistency and their geometric mean
at each turn, over all sessions).
"""

from __future__ import annotations

from typing import Any, Sequence

from PIL import Image

from refine.compare.benchmarks.base import Case, CaseScore, default_request, stable_hash
from refine.compare.benchmarks.folder import FolderBenchmark, mean, missing_images
from refine.compare.benchmarks.hub import FORMS, find_tables, has_image, image_bytes
from refine.compare.benchmarks.mllm import Criterion
from refine.compare.benchmarks.mse_official import NUM_TRY, mse_question, mse_summary, parse_mse, read_mse_prompts
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
        if self.judge_spec.scheme == "official":
            self.official_prompts = read_mse_prompts(self.judge_spec.prompts)

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
        if self.official_prompts is not None:
            return self._score_official(items)
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
        turns: list[list[tuple[float, float] | None]] = [[] for _ in items]
        for i, (p, _), (c, _) in zip(owner, pf, cc):
            turns[i].append(None if p is None or c is None else (p, c))
        return [self._session(case, judged, {}) for (case, _), judged in zip(items, turns)]

    def _score_official(self, items: Sequence[tuple[Case, list[EditResult]]]) -> list[CaseScore]:
        """VINCIE's compute_score.py: its question per turn over all images so far, asked until the first failure."""
        template = self.official_prompts["prompt_template"]
        sessions = []
        for case, results in items:
            outputs = [r.image for r in results]
            sessions.append([case.source_image().resize(outputs[0].size), *outputs])  # the script resizes the source
        judged: list[list[tuple[float, float] | None]] = [[] for _ in items]
        answers: list[list[str]] = [[] for _ in items]
        running = set(range(len(items)))
        tries = NUM_TRY if self.judge_spec.temperature > 0 else 1  # a greedy judge would repeat an unreadable answer
        for k in range(max((len(results) for _, results in items), default=0)):
            pending = sorted(i for i in running if k < len(items[i][1]))
            parsed: dict[int, tuple[float, float]] = {}
            for _ in range(tries):
                if not pending:
                    break
                texts = [mse_question(template, items[i][0].instructions[: k + 1]) for i in pending]
                replies = self.judge.ask([sessions[i][: k + 2] for i in pending], texts, text_first=True)
                for i, reply in zip(pending, replies):
                    answers[i].append(reply)
                    if (found := parse_mse(reply)) is not None:
                        parsed[i] = found
                pending = [i for i in pending if i not in parsed]
            for i in sorted(i for i in running if k < len(items[i][1])):
                judged[i].append(parsed.get(i))
                if i not in parsed or not (parsed[i][0] > self.threshold and parsed[i][1] > self.threshold):
                    running.discard(i)  # failed (stop) or unreadable (nothing more is known)
        return [self._session(case, turns, {"answers": said}) for (case, _), turns, said in zip(items, judged, answers)]

    def _session(self, case: Case, judged: list[tuple[float, float] | None], details: dict[str, Any]) -> CaseScore:
        """A session's scores from its judged turns ((pf, cc) on 0-10, None unreadable), the stop rule applied."""
        turn_scores, passed_turns, state = [], 0, "running"  # running -> failed | unknown
        for k in range(case.turns):
            if state != "running":
                # after a failure the session counts as failed at every later turn (VINCIE's success
                # rate at turn k); after an unreadable rating nothing more is known
                turn_scores.append({"overall": 0.0 if state == "failed" else None, "pf": None, "cc": None})
                continue
            rating = judged[k] if k < len(judged) else None
            if rating is None:
                state = "unknown"
                turn_scores.append({"overall": None, "pf": None, "cc": None})
                continue
            passed = rating[0] > self.threshold and rating[1] > self.threshold
            turn_scores.append({"overall": 100.0 if passed else 0.0, "pf": 10.0 * rating[0], "cc": 10.0 * rating[1]})
            passed_turns += passed
            state = "running" if passed else "failed"
        judged_rows = [t for t in turn_scores if t["pf"] is not None]
        summary = {
            "overall": None if state == "unknown" else 100.0 * passed_turns / case.turns,
            "pf": mean([t["pf"] for t in judged_rows]) if judged_rows else None,
            "cc": mean([t["cc"] for t in judged_rows]) if judged_rows else None,
        }
        return CaseScore(summary, turn_scores, {"threshold": self.threshold, "passed_turns": passed_turns, **details})

    def official_summary(self, rows: Sequence[Any]) -> dict[str, Any]:
        """compute_score.py's per-turn table for one entry's rows, see `mse_official.mse_summary`."""
        return mse_summary(rows)
