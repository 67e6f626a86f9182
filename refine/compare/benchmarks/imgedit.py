"""ImgEdit-Bench (basic, single turn) from a local folder, scored with its 1-5 three-criteria scheme.

Example (a small folder in the release's layout; the judge is only contacted when scoring):
    >>> import tempfile
    >>> from refine.compare.benchmarks.imgedit import ImgEditBench
    >>> from refine.testing.benchmark_folders import write_imgedit_folder
    >>> root = write_imgedit_folder(tempfile.mkdtemp(), cases=2)
    >>> judge = {"backend": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "Qwen2.5-VL-72B-Instruct"}}
    >>> [(c.id, c.category, c.instructions[0]) for c in ImgEditBench(str(root), judge).cases()]
    [('100', 'add', 'Change the square to green.'), ('101', 'remove', 'Change the square to blue.')]

Expected layout (the ImgEdit release: the edit list plus the original images)::

    <root>/
      basic_edit.json       {"<key>": {"id": "<image path relative to images>", "prompt": "...", "edit_type": "add"}, ...}
      <images>/<id>         e.g. original_images/animal/000342021.jpg

`images` is the folder the `id` paths are relative to; by default <root> itself or, when the
first image is not there, <root>/original_images (the name ImgEdit's instructions use).

`index` names the JSON file (`basic_edit.json`; older releases call it `singleturn.json`). The
keys are the case ids, `edit_type` is the category.

Scoring (ImgEdit's scheme: three criteria rated 1-5 by an MLLM, averaged per case): `compliance`
(does the edit do what the prompt asks), `seamlessness` (does the edited region blend in
naturally) and `fidelity` (physical plausibility and preservation of everything not asked to
change); `overall` is their mean. ImgEdit's official prompts word the three criteria per edit
type; here one rubric names the edit type in the question (see `CRITERIA`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from refine.compare.benchmarks.base import Case, CaseScore, stable_hash
from refine.compare.benchmarks.folder import FolderBenchmark, mean
from refine.compare.benchmarks.mllm import Criterion
from refine.errors import InputError
from refine.images import load_image
from refine.types import EditResult

LAYOUT = 'expected <root>/basic_edit.json mapping "<key>" -> {"id": image path under <images>, "prompt", "edit_type"}'

_PAIR = "The first image is the original and the second is the result of a '{edit_type}' edit with this instruction: {instruction}\n"
CRITERIA = (
    Criterion(
        "compliance",
        _PAIR + "Rate from 1 to 5 how completely and precisely the edit does what the instruction asks "
        "(1: not at all or the wrong target, 5: fully and exactly).",
        1, 5,
    ),
    Criterion(
        "seamlessness",
        _PAIR + "Rate from 1 to 5 how seamlessly the edited content blends into the image: consistent lighting, "
        "edges, scale and texture (1: obviously pasted or broken, 5: indistinguishable from a real photo).",
        1, 5,
    ),
    Criterion(
        "fidelity",
        _PAIR + "Rate from 1 to 5 how physically plausible the result is and how well everything the instruction "
        "does not mention is preserved (1: unrelated content changed or implausible, 5: everything else intact).",
        1, 5,
    ),
)


class ImgEditBench(FolderBenchmark):
    """The `imgedit` benchmark kind (see the module docstring for the layout and the scheme)."""

    name = "imgedit"
    metrics = ("overall", "compliance", "seamlessness", "fidelity")
    scale = (1.0, 5.0)
    version = 1
    criteria = CRITERIA
    layout = LAYOUT

    def __init__(
        self, root: str, judge: dict[str, Any] | None = None, index: str = "basic_edit.json", images: str | None = None
    ) -> None:
        super().__init__(root, judge)
        self.index, self.images = index, images
        self._entries = self._read_index()

    def _read_index(self) -> list[tuple[str, dict[str, Any], Path]]:
        path = self.root / self.index
        if not path.is_file():
            raise InputError(f"imgedit: no {self.index} in {str(self.root)!r}; {LAYOUT}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"imgedit: {path} is not valid JSON ({err})") from None
        if not isinstance(data, dict) or not data:
            raise InputError(f"imgedit: {path} must be a non-empty JSON object of cases; {LAYOUT}")
        folder = self._images_folder(data)
        entries = []
        for key, item in data.items():
            if not isinstance(item, dict) or not all(k in item for k in ("id", "prompt", "edit_type")):
                raise InputError(f"imgedit: case {key!r} in {path.name} needs id, prompt and edit_type; {LAYOUT}")
            image = folder / str(item["id"])
            if not image.is_file():
                raise InputError(f"imgedit: case {key!r}: image {str(image)!r} not found; set `images` to the folder holding {item['id']!r}")
            entries.append((str(key), item, image))
        return entries

    def _images_folder(self, data: dict[str, Any]) -> Path:
        if self.images is not None:
            return self.root / self.images
        first = next(iter(data.values()))
        relative = str(first.get("id", "")) if isinstance(first, dict) else ""
        for folder in (self.root, self.root / "original_images"):
            if (folder / relative).is_file():
                return folder
        return self.root

    @property
    def key(self) -> str:
        return f"imgedit-{stable_hash([str(self.root.resolve()), self.index, [k for k, _, _ in self._entries]])}"

    def cases(self) -> list[Case]:
        return [
            Case(
                id=key, category=str(item["edit_type"]), source=lambda image=image: load_image(image),
                instructions=[str(item["prompt"]).strip()], meta={"task_type": item["edit_type"], "image": str(item["id"])},
            )
            for key, item, image in self._entries
        ]

    def score(self, items: Sequence[tuple[Case, list[EditResult]]]) -> list[CaseScore]:
        images = [[case.source_image(), results[-1].image] for case, results in items]
        texts = [case.instructions[0] for case, _ in items]
        fields = [{"edit_type": case.category} for case, _ in items]
        rated = {c.name: self.judge.rate(c, images, texts, fields) for c in CRITERIA}
        scores = []
        for i in range(len(items)):
            ratings = {name: rated[name][i][0] for name in rated}
            overall = mean(list(ratings.values()))
            details = {"ratings": ratings, "judge": {name: rated[name][i][1] for name in rated}}
            scores.append(CaseScore({"overall": overall, **ratings}, None, details))
        return scores
