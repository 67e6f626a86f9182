"""RISEBench (reasoning-informed edits) from its data folder, judged on its three axes, Overall an accuracy.

Example (a small folder in the release's layout; the judge is only contacted when scoring):
    >>> import tempfile
    >>> from refine.compare.benchmarks.rise import RiseBench
    >>> from refine.testing.benchmark_folders import write_rise_folder
    >>> root = write_rise_folder(tempfile.mkdtemp())
    >>> judge = {"backend": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "m"}}
    >>> [(c.id, c.category) for c in RiseBench(str(root), judge).cases()][:2]
    [('temporal_reasoning_1', 'temporal_reasoning'), ('causal_reasoning_1', 'causal_reasoning')]

Expected layout (the repository `PhoenixZ810/RISEBench` holds RISEBench-64 in `data/`; the full
RISEBench-360 on the hub, `PhoenixZ/RISEBench`, has the same files)::

    <root>/                              (the checkout, or its data/ folder)
      data/data_total.json               [{"index": "temporal_reasoning_1", "category": "temporal_reasoning",
                                           "instruction": "...", "image": "temporal_reasoning_images/1.png",
                                           "reference": "..." | "reference_txt": "..." | "reference_img": "..._ref.png"}, ...]
      data/<image>, data/<reference_img>

The case id is `index`, the category `category` (one of `CATEGORIES`; others are kept with a
warning); a reference image is the case's target, a reference text (`reference` or
`reference_txt`) goes to `meta["reference"]` and into the judge's question. A missing image
fails when the benchmark is built, named in one line. ``rewrite: {backend: ...}`` has an MLLM
rewrite each instruction before editing, the Inline Critic paper's protocol (see `rewrite.py`).

Scoring ("refine-judge", our own wording of RISEBench's axes, not its GPT-4.1 prompts):
`reasoning` (is the result what the instruction implies; the reference is shown), `consistency`
(is what should stay unchanged preserved) and `plausibility` (is the result visually plausible),
each rated 1-5 and reported as percentages ((r - 1) / 4 * 100). As in RISEBench, a case counts as
solved only when every axis is at full marks (a rating of at least 4.5 here, since logit mode
reads expected values), and `overall` is the percentage of solved cases.

`judge.scheme: official` asks RISEBench's own prompts instead (the `prompt_*` constants of the
checkout's `utils.py`, chosen per category and reference kind as its gpt_eval.py does, see
`protocols.rise_queries`), parses each answer's "Final Score", and applies its rules: logical
cases answer 0/1 (mapped to 1/5) and have no plausibility question, a case is complete when every
rating it has is 5 (an unparseable answer makes it incomplete, as in gpt_eval.py), `overall` is
the completion accuracy, the ratings are reported as 25 * (r - 1), and the weighted score
(0.3 / 0.5 / 0.2, halved when reasoning is 1) is kept in the case details.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from refine.compare.benchmarks.base import Case, CaseScore, stable_hash
from refine.compare.benchmarks.folder import FolderBenchmark, missing_images, warn_unknown
from refine.compare.benchmarks.mllm import Criterion
from refine.compare.benchmarks.protocols import parse_final_score, read_rise_prompts, rise_aggregate, rise_queries
from refine.errors import InputError
from refine.images import load_image
from refine.types import EditResult

LAYOUT = "expected <root>/data/data_total.json (index, category, instruction, image, reference*) beside its images"
INDEX_PATHS = ("data/data_total.json", "data_total.json")
CATEGORIES = ("temporal_reasoning", "causal_reasoning", "spatial_reasoning", "logical_reasoning")
FULL_MARKS = 4.5  # an expected rating at or above this counts as the top score 5

_PAIR = "The first image is the original and the second is the result of editing it with this instruction: {instruction}\n"
CRITERIA = (
    Criterion(
        "reasoning",
        _PAIR + "{reference}Rate from 1 to 5 whether the result shows what the instruction implies after reasoning "
        "about it (1: wrong or unchanged, 5: exactly the expected outcome).",
        1, 5,
    ),
    Criterion(
        "consistency",
        _PAIR + "Rate from 1 to 5 how well everything the instruction does not ask to change is preserved "
        "(1: unrelated content changed, 5: everything else intact).",
        1, 5,
    ),
    Criterion(
        "plausibility",
        "Rate from 1 to 5 how visually plausible and free of artifacts this image is (1: implausible or broken, 5: flawless).",
        1, 5,
    ),
)


class RiseBench(FolderBenchmark):
    """The `rise` benchmark kind (see the module docstring for the layout and the scheme)."""

    name = "rise"
    metrics = ("overall", "reasoning", "consistency", "plausibility")
    scale = (0.0, 100.0)
    version = 1
    criteria = CRITERIA
    layout = LAYOUT

    def __init__(
        self, root: str, judge: dict[str, Any] | None = None, index: str | None = None, rewrite: dict[str, Any] | None = None
    ) -> None:
        super().__init__(root, judge)
        self.set_rewrite(rewrite)
        candidates = [index] if index else INDEX_PATHS
        path = next((self.root / c for c in candidates if (self.root / c).is_file()), None)
        if path is None:
            raise InputError(f"rise: none of {', '.join(candidates)} in {str(self.root)!r}; {LAYOUT}")
        self.index = path
        self._rows = self._read_index()
        if self.judge_spec.scheme == "official":
            self.official_prompts = read_rise_prompts(self.judge_spec.prompts)

    def _read_index(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.index.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as err:
            raise InputError(f"rise: {self.index} is not valid JSON ({err})") from None
        if not isinstance(data, list) or not data:
            raise InputError(f"rise: {self.index} must be a non-empty JSON list of cases; {LAYOUT}")
        folder = self.index.parent
        missing = []
        for item in data:
            if not isinstance(item, dict) or not all(k in item for k in ("index", "category", "instruction", "image")):
                raise InputError(f"rise: every case in {self.index.name} needs index, category, instruction and image; {LAYOUT}")
            if not (folder / item["image"]).is_file() or (item.get("reference_img") and not (folder / item["reference_img"]).is_file()):
                missing.append(str(item["index"]))
        if missing:
            raise missing_images("rise", missing, f"image or reference_img file under {str(folder)!r}")
        if len({str(item["index"]) for item in data}) != len(data):
            raise InputError(f"rise: {self.index} repeats an index; each case's index must be unique")
        warn_unknown("rise", "category", [item["category"] for item in data], CATEGORIES)
        return data

    @property
    def key(self) -> str:
        return f"rise-{stable_hash([str(self.root.resolve()), [(r['index'], r['instruction']) for r in self._rows]])}{self.rewrite_key}"

    def cases(self) -> list[Case]:
        folder = self.index.parent
        return [
            Case(
                id=str(item["index"]), category=str(item["category"]), source=lambda p=folder / item["image"]: load_image(p),
                instructions=[str(item["instruction"]).strip()],
                target=(lambda p=folder / item["reference_img"]: load_image(p)) if item.get("reference_img") else None,
                meta={
                    "task_type": item["category"], "image": item["image"],
                    "reference": str(item.get("reference") or item.get("reference_txt") or ""),
                    # for `refine compare export --layout rise`: the case and its files, as released
                    "item": item, "files": {n: str(folder / n) for n in (item["image"], item.get("reference_img")) if n},
                },
            )
            for item in self._rows
        ]

    def score_once(self, items: Sequence[tuple[Case, list[EditResult]]]) -> list[CaseScore]:
        if self.official_prompts is not None:
            return self._score_official(items)
        pairs = [[case.source_image(), results[-1].image] for case, results in items]
        texts = [case.instructions[0] for case, _ in items]
        fields = [
            {"reference": f"The expected outcome: {case.meta['reference']}\n" if case.meta.get("reference") else ""}
            for case, _ in items
        ]
        rated = {
            c.name: self.judge.rate(c, [[pair[1]] for pair in pairs] if c.name == "plausibility" else pairs, texts, fields)
            for c in CRITERIA
        }
        scores = []
        for i in range(len(items)):
            ratings = {name: rated[name][i][0] for name in rated}
            known = None not in ratings.values()
            solved = (100.0 if all(r >= FULL_MARKS for r in ratings.values()) else 0.0) if known else None
            percent = {name: None if r is None else (r - 1.0) / 4.0 * 100.0 for name, r in ratings.items()}
            details = {"ratings": ratings, "judge": {name: rated[name][i][1] for name in rated}}
            scores.append(CaseScore({"overall": solved, **percent}, None, details))
        return scores

    def _score_official(self, items: Sequence[tuple[Case, list[EditResult]]]) -> list[CaseScore]:
        """RISEBench's gpt_eval.py: its questions per category, "Final Score" parsing, completion and weighted score."""
        asked: list[tuple[int, str]] = []  # (case, dimension) of each question
        images, texts = [], []
        for i, (case, results) in enumerate(items):
            roles = {"input": case.source_image, "reference": case.target_image, "output": lambda r=results: r[-1].image}
            for dimension, (text, order) in rise_queries(self.official_prompts, case.meta["item"], case.instructions[0]).items():
                asked.append((i, dimension))
                images.append([roles[role]() for role in order])
                texts.append(text)
        answers = self.judge.ask(images, texts, text_first=True)  # gpt_eval.py sends the prompt, then the images
        parsed: list[dict] = [{} for _ in items]
        raw: list[dict] = [{} for _ in items]
        for (i, dimension), answer in zip(asked, answers):
            parsed[i][dimension], raw[i][dimension] = parse_final_score(answer), answer
        scores = []
        for (case, _), found, answer in zip(items, parsed, raw):
            result = rise_aggregate(case.category, found)
            percent = lambda r: None if r is None else 25.0 * (r - 1)  # noqa: E731  (gpt_eval.py's trans_to_percent)
            if result is None:  # an answer without a final score: no ratings, and not complete (gpt_eval.py's rule)
                metrics = {"overall": 0.0, "reasoning": None, "consistency": None, "plausibility": None}
            else:
                metrics = {
                    "overall": 100.0 * result["complete"], "reasoning": percent(result["reasoning"]),
                    "consistency": percent(result["consistency"]), "plausibility": percent(result["quality"]),
                }
            scores.append(CaseScore(metrics, None, {"official": result, "parsed": found, "answers": answer}))
        return scores
