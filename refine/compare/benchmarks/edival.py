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

`judge.scheme: official` computes EdiVal's own metrics instead (`edival_metrics.py`, models in
`edival_detector.py`): IF_t by Grounding DINO detections and EdiVal's rules per task type (with
the judge backend as EdiVal's VLM for its colour, material, text and background checks), CC_t from
DINO features of the unchanged objects and of the background, per turn from the CSV's prefix rows
(`format_instructions`, `unchanged_objects`, `all_objects`, `bg_consistency`). The models are the
benchmark's `detector` key ({model: IDEA-Research/grounding-dino-tiny, features:
facebook/dinov2-base, device: cuda}); `judge.prompts` may point to an EdiVal checkout to ask its
own VLM questions. IF_t is 0 or 100; a case's `if` is the mean over turns, `cc` the mean over the
turns that have one (EdiVal skips CC after a background change), `overall` sqrt(if * cc), and
`if_t<k>` / `cc_t<k>` are kept per turn, so the report's means at turn k are EdiVal's IF_k and
CC_k; EdiVal-O at turn k is sqrt(IF_k * CC_k) of those means, which the report adds per entry
(`turn_table`; `edival_metrics.run_turn_table` recomputes it from a run's cases.jsonl). The
report labels this ``official-metrics (...)``, naming the models and what differs from EdiVal's.
"""

from __future__ import annotations

import ast
import csv
import zipfile
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from refine.compare.benchmarks.base import Case, CaseScore, default_request, stable_hash
from refine.compare.benchmarks.edival_metrics import VLM_FILE, VLM_QUESTIONS, DetectorSpec, metrics_label, turn_table
from refine.compare.benchmarks.folder import FolderBenchmark, geometric_mean, mean, missing_images, warn_unknown
from refine.compare.benchmarks.mllm import Criterion
from refine.compare.benchmarks.protocols import read_constants
from refine.config import validate_config
from refine.errors import ConfigError, InputError
from refine.images import load_image
from refine.types import EditRequest, EditResult

LAYOUT = (
    "expected <root>/oai_instruction_generation_output.csv (image_index, turns, task_type, instructions) and "
    "<root>/input_images_resize_512/<image_index>_input_raw.png|jpg (or that folder as a .zip)"
)
COLUMNS = ("image_index", "turns", "task_type", "instructions")
METRIC_COLUMNS = ("format_instructions", "unchanged_objects", "all_objects", "bg_consistency")  # read by scheme official
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
        detector: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(root, judge)
        self.csv_file, self.images, self.n_turns = csv_file, images, turns
        self.official = self.judge_spec.scheme == "official"
        if detector is not None and not self.official:
            raise ConfigError("edival: `detector` is used only with judge.scheme: official (EdiVal's detector metrics); drop it or set the scheme")
        self.detector = validate_config(DetectorSpec, dict(detector or {}), source="edival detector") if self.official else None
        self.questions: dict[str, str] | None = None  # EdiVal's VLM questions, when read from judge.prompts
        if self.official and self.judge_spec.prompts is not None:
            checkout = Path(self.judge_spec.prompts).expanduser()
            file = checkout if checkout.is_file() else checkout / VLM_FILE
            if not file.is_file():
                raise InputError(f"edival judge prompts: no {VLM_FILE} under {str(checkout)!r}; point prompts to your EdiVal checkout or that file")
            self.questions = read_constants(file, tuple(VLM_QUESTIONS), "edival")
            self.official_prompts = self.questions
        if self.official:
            self.metrics = (*type(self).metrics, *[f"{m}_t{k}" for m in ("if", "cc") for k in range(1, turns + 1)])
        self._scorer = None
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
            needed = COLUMNS + (METRIC_COLUMNS if self.official else ())
            missing = [c for c in needed if c not in (reader.fieldnames or [])]
            if missing:
                why = " (EdiVal's metrics read them: use the released CSV)" if set(missing) <= set(METRIC_COLUMNS) else ""
                raise InputError(f"edival: {self.csv_file} lacks the column(s) {', '.join(missing)}{why}; {LAYOUT}")
            every = list(reader)
        rows = [row for row in every if row["turns"].strip() == str(self.n_turns)]
        prefixes = {(row["image_index"].strip(), row["turns"].strip()): row for row in every}
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
            entry = {"id": index, "instructions": instructions, "task_types": task_types, "image": image}
            if self.official:
                entry["turn_info"] = [self._turn_info(prefixes, index, t) for t in range(1, self.n_turns + 1)]
            out.append(entry)
        if missing:
            raise missing_images("edival", missing, f"<image_index>_input_raw.png|jpg in {self.images!r}")
        warn_unknown("edival", "task_type", [t for row in out for t in row["task_types"]], TASK_TYPES)
        return out

    def _turn_info(self, prefixes: dict[tuple[str, str], dict[str, str]], index: str, turn: int) -> dict[str, Any]:
        """What EdiVal's metrics read for turn `turn` (1-based): the last entries of the row with turns == turn."""
        row = prefixes.get((index, str(turn)))
        if row is None:
            raise InputError(f"edival: image {index} has no row with turns == {turn}; EdiVal's metrics read each turn's prefix row")
        return {
            "task_type": str(_literal_list(row["task_type"], index, "task_type")[-1]),
            "instruction": _clean(_literal_list(row["instructions"], index, "instructions")[-1]),
            "format_instruction": _clean(_literal_list(row["format_instructions"], index, "format_instructions")[-1]),
            "unchanged_objects": [str(o) for o in _literal_list(row["unchanged_objects"], index, "unchanged_objects")],
            "all_objects": [str(o) for o in _literal_list(row["all_objects"], index, "all_objects")],
            "bg_consistency": row["bg_consistency"].strip().lower() == "true",
        }

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
                instructions=row["instructions"],
                meta={"task_types": row["task_types"], "image_index": row["id"], **({"turn_info": row["turn_info"]} if "turn_info" in row else {})},
            )
            for row in self._rows
        ]

    def request(self, case: Case, turn: int, image: Image.Image, seed: int) -> EditRequest:
        # each turn's request names that turn's task type (the case's category is the last one's)
        return default_request(case, turn, image, seed, benchmark=self.name, task_type=case.meta["task_types"][turn])

    @property
    def protocol_label(self) -> str:
        if not self.official:
            return "refine-judge"
        return metrics_label(self.detector, self.judge_spec.backend.get("model"), self.questions is not None)

    @property
    def judge_key(self) -> str:
        key = super().judge_key
        if self.official:  # the detector and feature models are part of the scheme
            from refine.compare.entries import fingerprint, resolve_path

            models = [(name, fingerprint(found) if (found := resolve_path(name)) else None) for name in (self.detector.model, self.detector.features)]
            key += "-det" + stable_hash([self.detector.model_dump(), models])
        return key

    def score_once(self, items: Sequence[tuple[Case, list[EditResult]]]) -> list[CaseScore]:
        if self.official:
            return self._score_metrics(items)
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

    # -- scheme official: EdiVal's detector metrics ---------------------------------------------

    def turn_table(self, cases: Sequence[Sequence[dict[str, float | None]]]) -> list[dict[str, float | None]] | None:
        """EdiVal's per-turn IF, CC and O = sqrt(IF x CC) over the cases' means (scheme official; None otherwise)."""
        return turn_table(cases) if self.official else None

    @property
    def scorer(self):
        """The detector + feature models, loaded on first use (never when only listing cases)."""
        if self._scorer is None:
            # imported here: it loads torch and transformers' Grounding DINO, which only this scheme needs
            from refine.compare.benchmarks.edival_detector import EdiValScorer

            self._scorer = EdiValScorer(self.detector, ask=lambda images, texts: self.judge.ask(images, texts), questions=self.questions)
        return self._scorer

    def _score_metrics(self, items: Sequence[tuple[Case, list[EditResult]]]) -> list[CaseScore]:
        scores = []
        for case, results in items:
            base = previous = case.source_image()
            turns, details = [], []
            for info, result in zip(case.meta["turn_info"], results):
                verdict = self.scorer.instruction_following(previous, result.image, info)
                parts = self.scorer.consistency(base, result.image, info["unchanged_objects"], info["all_objects"]) if info["bg_consistency"] else None
                value_if, value_cc = (100.0 if verdict.passed else 0.0), (None if parts is None else parts["cc"])
                turns.append({"overall": geometric_mean(value_if, value_cc), "if": value_if, "cc": value_cc})
                details.append({"task_type": info["task_type"], "if_reason": verdict.reason, "consistency": parts})
                previous = result.image
            mean_if = mean([t["if"] for t in turns])
            present = [t["cc"] for t in turns if t["cc"] is not None]
            mean_cc = sum(present) / len(present) if present else None  # EdiVal averages CC over the turns that have one
            per_turn = {f"{m}_t{k + 1}": t[m] for m in ("if", "cc") for k, t in enumerate(turns)}
            metrics = {"overall": geometric_mean(mean_if, mean_cc), "if": mean_if, "cc": mean_cc, **per_turn}
            scores.append(CaseScore(metrics, turns, {"turns": details}))
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

