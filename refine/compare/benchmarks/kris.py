"""KRIS-Bench (knowledge-based reasoning edits) from a checkout of its repository, judged on three 1-5 axes.

Example (a small folder in the release's layout; the judge is only contacted when scoring):
    >>> import tempfile
    >>> from refine.compare.benchmarks.kris import KrisBench
    >>> from refine.testing.benchmark_folders import write_kris_folder
    >>> root = write_kris_folder(tempfile.mkdtemp())
    >>> judge = {"backend": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "m"}}
    >>> [(c.id, c.instructions[0]) for c in KrisBench(str(root), judge).cases()][:2]
    [('chemistry/1', 'Add a piece of solid sodium to the water'), ('chemistry/2', 'Color change of red cabbage pH indicator when dropped into the cup')]

Expected layout (the repository `mercurystraw/Kris_Bench`, whose images live in git)::

    <root>/                          (the checkout, or its KRIS_Bench/ folder)
      KRIS_Bench/<category>/annotation.json   {"1": {"ori_img": "1.jpg" | ["1-1.jpg", "1-2.jpg"],
                                               "gt_img": "", "ins_en": "...", "explain_en": "..."}, ...}
      KRIS_Bench/<category>/<ori_img>

The case id is `<category>/<key>`; `ins_en` is the instruction, `explain_en` (the expected outcome,
given to the judge) goes to the case meta, `gt_img` (temporal prediction's ground truth) is the
target. Several `ori_img`s (multi-element composition, temporal prediction): the first is the
image edited, the others are listed in `meta["extra_images"]`, because refine's editors take one
image. `categories` keeps a subset (e.g. without `temporal_prediction`, as EditThinker reports);
a category outside `CATEGORIES` is kept with a warning, a missing image fails at build, named.
`exclude` drops categories instead: ``exclude: [temporal_prediction]`` is the protocol flag of
EditThinker's KRIS-Bench numbers (Temporal excluded); ``rewrite: {backend: ...}`` is the Inline
Critic paper's (an MLLM rewrites each instruction before editing, see `rewrite.py`).

Scoring ("refine-judge", our own wording of KRIS-Bench's three axes on the configured VLM, not
its GPT-4o prompts): `consistency` (is everything not asked to change preserved), `instruction`
(is the instruction carried out correctly, with the expected outcome `explain_en` when given)
and `quality` (is the result natural and free of artifacts), each 1-5; `overall` is their mean.

`judge.scheme: official` asks KRIS-Bench's own prompts instead (the checkout's ``utils/prompts.py``,
chosen per category as its metrics_*.py scripts do, see `kris_official`): visual consistency,
instruction following and visual quality for every case, knowledge plausibility for the ten
knowledge categories (one dual question gives it with instruction following). Answers are parsed
by the scripts' rules; every 1-5 score is reported on KRIS-Bench's 100-point scale ((s - 1) * 25)
as `consistency`, `instruction`, `quality`, `knowledge`, with `overall` their mean per case. The
report's summary.json adds the paper's table (`official_summary`: the seven dimension groups,
Factual / Conceptual / Procedural knowledge and Overall, scores pooled as summarize.py pools them).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from refine.compare.benchmarks.base import Case, CaseScore, stable_hash
from refine.compare.benchmarks.folder import FolderBenchmark, mean, missing_images, warn_unknown
from refine.compare.benchmarks.kris_official import (
    KNOWLEDGE, kris_colon, kris_queries, kris_summary, normalize, parse_kris_dual, parse_kris_score, read_kris_prompts,
)
from refine.compare.benchmarks.mllm import Criterion
from refine.errors import InputError
from refine.images import load_image
from refine.types import EditResult

LAYOUT = 'expected <root>/KRIS_Bench/<category>/annotation.json ({"1": {"ori_img", "ins_en", "explain_en", "gt_img"}}) beside its images'
CATEGORIES = (
    "abstract_reasoning", "anomaly_correction", "biology", "chemistry", "color_change", "count_change", "geography",
    "humanities", "mathematics", "medicine", "multi-element_composition", "multi-instruction_execution",
    "part_completion", "physics", "position_movement", "practical_knowledge", "rule-based_reasoning",
    "size_adjustment", "temporal_prediction", "viewpoint_change",
)  # the folders of KRIS_Bench/ in the repository

_PAIR = "The first image is the original and the second is the result of editing it with this instruction: {instruction}\n"
CRITERIA = (
    Criterion(
        "consistency",
        _PAIR + "Rate from 1 to 5 how well everything the instruction does not ask to change is preserved "
        "(1: the image was changed far beyond the instruction, 5: nothing else changed).",
        1, 5,
    ),
    Criterion(
        "instruction",
        _PAIR + "{explanation}Rate from 1 to 5 how correctly the edit carries out the instruction, including the "
        "knowledge or reasoning it needs (1: wrong or not done, 5: fully correct).",
        1, 5,
    ),
    Criterion(
        "quality",
        "Rate from 1 to 5 how natural this image looks and how free it is of artifacts such as distortions, blur "
        "or seams (1: severe problems, 5: flawless).",
        1, 5,
    ),
)


class KrisBench(FolderBenchmark):
    """The `kris` benchmark kind (see the module docstring for the layout and the scheme)."""

    name = "kris"
    metrics = ("overall", "consistency", "instruction", "quality")
    scale = (1.0, 5.0)
    version = 1
    criteria = CRITERIA
    layout = LAYOUT

    def __init__(
        self,
        root: str,
        judge: dict[str, Any] | None = None,
        categories: list[str] | None = None,
        exclude: list[str] | None = None,
        rewrite: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(root, judge)
        self.set_rewrite(rewrite)
        self.categories, self.exclude = categories, list(exclude or [])
        self.bench = self.root / "KRIS_Bench" if (self.root / "KRIS_Bench").is_dir() else self.root
        self._rows = self._read_index()
        if self.judge_spec.scheme == "official":
            self.official_prompts = read_kris_prompts(self.judge_spec.prompts, {row["category"] for row in self._rows})
            self.metrics = (*self.metrics, "knowledge")  # knowledge plausibility: the ten knowledge categories
            self.scale = (0.0, 100.0)  # KRIS-Bench reports (s - 1) * 25

    def _read_index(self) -> list[dict[str, Any]]:
        files = sorted(self.bench.glob("*/annotation.json"))
        if not files:
            raise InputError(f"kris: no <category>/annotation.json under {str(self.bench)!r}; {LAYOUT}")
        found = [f.parent.name for f in files]
        if self.categories is not None:
            unknown = sorted(set(self.categories) - set(found))
            if unknown:
                raise InputError(f"kris: categories {', '.join(unknown)} are not in {str(self.bench)!r}; it has {', '.join(found)}")
            files = [f for f in files if f.parent.name in self.categories]
        unknown = sorted(set(self.exclude) - set(found))
        if unknown:
            raise InputError(f"kris: exclude names {', '.join(unknown)}, not in {str(self.bench)!r}; it has {', '.join(found)}")
        files = [f for f in files if f.parent.name not in self.exclude]
        if not files:
            raise InputError(f"kris: categories/exclude leave no category of {', '.join(found)}; keep at least one")
        warn_unknown("kris", "category", [f.parent.name for f in files], CATEGORIES)
        rows, missing = [], []
        for path in files:
            category = path.parent.name
            try:
                data = json.loads(path.read_text(encoding="utf-8-sig"))
            except json.JSONDecodeError as err:
                raise InputError(f"kris: {path} is not valid JSON ({err})") from None
            for key, item in sorted(data.items(), key=lambda kv: (len(kv[0]), kv[0])):  # "1", "2", ... "10"
                if not isinstance(item, dict) or "ori_img" not in item or "ins_en" not in item:
                    raise InputError(f"kris: case {key!r} in {path} needs ori_img and ins_en; {LAYOUT}")
                images = item["ori_img"] if isinstance(item["ori_img"], list) else [item["ori_img"]]
                paths = [path.parent / name for name in images]
                case_id = f"{category}/{key}"
                if not paths or not all(p.is_file() for p in paths):
                    missing.append(case_id)
                gt = path.parent / item["gt_img"] if item.get("gt_img") else None
                rows.append({"id": case_id, "category": category, "key": str(key), "item": item, "paths": paths, "gt": gt})
        if missing:
            raise missing_images("kris", missing, "ori_img file")
        return rows

    @property
    def key(self) -> str:
        return f"kris-{stable_hash([str(self.root.resolve()), [(r['id'], r['item']['ins_en']) for r in self._rows]])}{self.rewrite_key}"

    def cases(self) -> list[Case]:
        return [
            Case(
                id=row["id"], category=row["category"], source=lambda p=row["paths"][0]: load_image(p),
                instructions=[str(row["item"]["ins_en"]).strip()],
                target=(lambda p=row["gt"]: load_image(p)) if row["gt"] is not None and row["gt"].is_file() else None,
                meta={
                    "task_type": row["category"], "key": row["key"], "explanation": str(row["item"].get("explain_en") or ""),
                    "extra_images": [str(p) for p in row["paths"][1:]],
                    # for `refine compare export --layout kris`: the annotation and its files, as released
                    "annotation": row["item"], "files": {p.name: str(p) for p in [*row["paths"], *([row["gt"]] if row["gt"] is not None and row["gt"].is_file() else [])]},
                },
            )
            for row in self._rows
        ]

    def score_once(self, items: Sequence[tuple[Case, list[EditResult]]]) -> list[CaseScore]:
        if self.official_prompts is not None:
            return self._score_official(items)
        pairs = [[case.source_image(), results[-1].image] for case, results in items]
        texts = [case.instructions[0] for case, _ in items]
        fields = [
            {"explanation": f"The expected outcome: {case.meta['explanation']}\n" if case.meta.get("explanation") else ""}
            for case, _ in items
        ]
        rated = {
            c.name: self.judge.rate(c, [[pair[1]] for pair in pairs] if c.name == "quality" else pairs, texts, fields)
            for c in CRITERIA
        }
        scores = []
        for i in range(len(items)):
            ratings = {name: rated[name][i][0] for name in rated}
            details = {"ratings": ratings, "judge": {name: rated[name][i][1] for name in rated}}
            scores.append(CaseScore({"overall": mean(list(ratings.values())), **ratings}, None, details))
        return scores

    def _score_official(self, items: Sequence[tuple[Case, list[EditResult]]]) -> list[CaseScore]:
        """KRIS-Bench's metrics_*.py: their questions per category, one answer each, their parsing and scale."""
        asked: list[tuple[int, str]] = []  # (case, question) of each query
        queries: list[list] = []
        for i, (case, results) in enumerate(items):
            originals = [case.source_image, *[lambda p=p: load_image(p) for p in case.meta["extra_images"]]]
            slots = {"ori": lambda n: originals[n](), "gt": lambda n: case.target_image() if case.target is not None else None,
                     "edit": lambda n, r=results: r[-1].image}
            asks = kris_queries(self.official_prompts, case.category, case.meta["annotation"], case.instructions[0])
            for name, (text, parts) in asks.items():
                content = [text, *[part if isinstance(part, str) else slots[part[0]](part[1]) for part in parts]]
                if any(part is None for part in content):
                    continue  # viewpoint_change without its ground truth: the script scores nothing for it
                asked.append((i, name))
                queries.append(content)
        answers = self.judge.ask_parts(queries)
        raw: list[dict[str, str]] = [{} for _ in items]
        for (i, name), answer in zip(asked, answers):
            raw[i][name] = answer
        scores = []
        for (case, _), answer in zip(items, raw):
            colon = kris_colon(case.category)
            ratings = {
                "consistency": parse_kris_score(answer.get("consistency"), "consistency_score", colon),
                "instruction": parse_kris_score(answer.get("instruction"), "instruction_score", colon) if "dual" not in answer else None,
                "quality": parse_kris_score(answer.get("quality"), "quality_score", colon),
                "knowledge": None,
            }
            if "dual" in answer:
                ratings["instruction"], ratings["knowledge"] = parse_kris_dual(answer["dual"])
            metrics = {name: normalize(value) for name, value in ratings.items()}
            needed = ["consistency", "instruction", "quality", *(["knowledge"] if case.category in KNOWLEDGE else [])]
            metrics["overall"] = mean([metrics[name] for name in needed])
            scores.append(CaseScore({"overall": metrics.pop("overall"), **metrics}, None, {"official": ratings, "answers": answer}))
        return scores

    def official_summary(self, rows: Sequence[Any]) -> dict[str, Any]:
        """KRIS-Bench's table for one entry's rows (objects with `category` and `scores`), see `kris_official.kris_summary`."""
        return kris_summary([(row.category, row.scores) for row in rows])
