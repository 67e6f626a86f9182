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
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from refine.compare.benchmarks.base import Case, CaseScore, stable_hash
from refine.compare.benchmarks.folder import FolderBenchmark, mean, missing_images, warn_unknown
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
