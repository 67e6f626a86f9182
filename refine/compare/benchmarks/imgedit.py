"""ImgEdit-Bench (basic, single turn) from a local folder, scored with its 1-5 three-criteria scheme.

Example (a small folder in the release's layout; the judge is only contacted when scoring):
    >>> import tempfile
    >>> from refine.compare.benchmarks.imgedit import ImgEditBench
    >>> from refine.testing.benchmark_folders import write_imgedit_folder
    >>> root = write_imgedit_folder(tempfile.mkdtemp(), cases=2)
    >>> judge = {"backend": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "Qwen2.5-VL-72B-Instruct"}}
    >>> [(c.id, c.category, c.instructions[0]) for c in ImgEditBench(str(root), judge).cases()]
    [('100', 'add', 'Change the square to green.'), ('101', 'remove', 'Change the square to blue.')]

Expected layout (the ImgEdit release: the repository's `Benchmark/` folder, with the hub's
`Benchmark.tar` unpacked into it, or left packed beside it)::

    <root>/                    (= Benchmark/)
      Basic/basic_edit.json    {"<key>": {"id": "<category>/<file>", "prompt": "...", "edit_type": "add"}, ...}
      singleturn/<id>          e.g. singleturn/animal/000342021.jpg, singleturn/daily object/000276684.jpg
      Benchmark.tar            (only when not unpacked: sources are read from it)

The official relative paths are tried first, then flat copies: the index at `Basic/basic_edit.json`,
`Benchmark/Basic/basic_edit.json`, `basic_edit.json` or `singleturn.json` (older releases), or
the one `index` names; the sources in the folder holding most `id`s among `singleturn/`,
`Benchmark/singleturn/`, `original_images/` (the name the ImgEdit instructions use), <root>
itself and `../singleturn` next to the index, or the folder `images` names. A case whose source
is missing fails when the benchmark is built, named in one line; an `edit_type` outside ImgEdit's
nine (`EDIT_TYPES`) is kept with a warning. The keys are the case ids, `edit_type` the category.

Scoring (ImgEdit's scheme: three criteria rated 1-5 by an MLLM, averaged per case): `compliance`
(does the edit do what the prompt asks), `seamlessness` (does the edited region blend in
naturally) and `fidelity` (physical plausibility and preservation of everything not asked to
change); `overall` is their mean. ImgEdit's official prompts word the three criteria per edit
type; here one rubric names the edit type in the question (see `CRITERIA`).

`judge.scheme: official` asks ImgEdit's own per-edit-type prompts instead (the ``--prompts_json``
file of its basic_bench.py, read from `judge.prompts`: see `protocols.py`), with the original and
the edited image, and scores as its step1/step2 scripts do: every ``Name: <integer>`` line of the
answer counts, a case scores their mean rounded to 2 decimals (no score when there is none), the
"all" row averages per edit type, then across types. Per-criterion metrics are kept when the
answer has exactly three scores, in order.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any, Callable, Sequence

from PIL import Image

from refine.compare.benchmarks.base import Case, CaseScore, stable_hash
from refine.compare.benchmarks.folder import FolderBenchmark, mean, missing_images, warn_unknown
from refine.compare.benchmarks.mllm import Criterion
from refine.compare.benchmarks.protocols import parse_imgedit_scores, read_imgedit_prompts
from refine.errors import InputError
from refine.images import load_image
from refine.types import EditResult

LAYOUT = (
    'expected <root>/Basic/basic_edit.json (or <root>/basic_edit.json) mapping "<key>" -> {"id", "prompt", "edit_type"} '
    "and the sources under <root>/singleturn/<id> (or original_images/, or Benchmark.tar)"
)
# where the index is, official relative paths first (the repo's Benchmark/Basic/, then a flat copy, then older names)
INDEX_PATHS = ("Basic/basic_edit.json", "Benchmark/Basic/basic_edit.json", "basic_edit.json", "singleturn.json", "singleturn/singleturn.json")
# where the `id` paths are relative to, official first: Benchmark.tar unpacks to Benchmark/singleturn/<category>/
IMAGE_FOLDERS = ("singleturn", "Benchmark/singleturn", "original_images", ".")
ARCHIVES = ("Benchmark.tar", "Benchmark/Benchmark.tar")
EDIT_TYPES = ("add", "adjust", "extract", "replace", "remove", "background", "style", "compose", "action")

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
    aggregate = "categories"  # the "all" row averages per task type, then across types, as the official scripts do

    def __init__(
        self, root: str, judge: dict[str, Any] | None = None, index: str | None = None, images: str | None = None
    ) -> None:
        super().__init__(root, judge)
        self.images = images
        self.index = self._find_index(index)
        self._tar: tarfile.TarFile | None = None  # set when the sources are read from Benchmark.tar
        self._members: dict[str, tarfile.TarInfo] = {}
        self._entries = self._read_index()
        if self.judge_spec.scheme == "official":
            self.official_prompts = read_imgedit_prompts(self.judge_spec.prompts)
            lacking = sorted({str(item["edit_type"]) for _, item, _ in self._entries} - set(self.official_prompts))
            if lacking:
                raise InputError(f"imgedit judge prompts have no prompt for edit_type(s) {', '.join(lacking)}; they cover {', '.join(sorted(self.official_prompts))}")

    def _find_index(self, index: str | None) -> Path:
        candidates = [index] if index else INDEX_PATHS
        for relative in candidates:
            if (self.root / relative).is_file():
                return self.root / relative
        raise InputError(f"imgedit: none of {', '.join(candidates)} in {str(self.root)!r}; {LAYOUT}")

    def _read_index(self) -> list[tuple[str, dict[str, Any], Callable[[], Image.Image]]]:
        path = self.index
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as err:
            raise InputError(f"imgedit: {path} is not valid JSON ({err})") from None
        if not isinstance(data, dict) or not data:
            raise InputError(f"imgedit: {path} must be a non-empty JSON object of cases; {LAYOUT}")
        for key, item in data.items():
            if not isinstance(item, dict) or not all(k in item for k in ("id", "prompt", "edit_type")):
                raise InputError(f"imgedit: case {key!r} in {path.name} needs id, prompt and edit_type; {LAYOUT}")
        relatives = [str(item["id"]) for item in data.values()]
        folder = self._images_folder(relatives)
        entries, missing = [], []
        for key, item in data.items():
            loader = self._loader(folder, str(item["id"]))
            if loader is None:
                missing.append(str(key))
            entries.append((str(key), {**item, "_path": str(folder / item["id"]) if folder is not None else None}, loader))
        if missing:
            where = f"under {str(folder)!r}" if folder is not None else "in Benchmark.tar"
            raise missing_images("imgedit", missing, f"source image {where}")
        warn_unknown("imgedit", "edit_type", [item["edit_type"] for item in data.values()], EDIT_TYPES)
        return entries

    def _images_folder(self, relatives: list[str]) -> Path | None:
        """The folder the `id` paths are relative to (`images`, else the one holding most of them, official
        places first), or None when only `Benchmark.tar` holds them."""
        if self.images is not None:
            return self.root / self.images
        here = self.index.parent
        candidates = [self.root / c for c in IMAGE_FOLDERS] + [here, here.parent / "singleturn"]
        counts = [sum((folder / r).is_file() for r in relatives) for folder in candidates]
        if max(counts) > 0:
            return candidates[counts.index(max(counts))]
        archive = next((self.root / name for name in ARCHIVES if (self.root / name).is_file()), None)
        if archive is None:
            return candidates[0]
        try:
            self._tar = tarfile.open(archive)
        except tarfile.TarError as err:
            raise InputError(f"imgedit: {archive} is not a readable tar file ({err})") from None
        self._members = {m.name: m for m in self._tar.getmembers() if m.isfile()}
        return None

    def _loader(self, folder: Path | None, relative: str) -> Callable[[], Image.Image] | None:
        if folder is not None:
            path = folder / relative
            return (lambda: load_image(path)) if path.is_file() else None
        # inside Benchmark.tar: the member whose path ends with singleturn/<id> (or <id>)
        member = next((m for name, m in self._members.items() if name.endswith("/" + relative) or name == relative), None)
        if member is None:
            return None
        return lambda: load_image(self._tar.extractfile(member).read(), name=relative)

    @property
    def key(self) -> str:
        return f"imgedit-{stable_hash([str(self.root.resolve()), str(self.index.relative_to(self.root)), [k for k, _, _ in self._entries]])}"

    def cases(self) -> list[Case]:
        return [
            Case(
                id=key, category=str(item["edit_type"]), source=loader,
                instructions=[str(item["prompt"]).strip()], meta={"task_type": item["edit_type"], "image": str(item["id"]), "key": key, "source_path": item["_path"]},
            )
            for key, item, loader in self._entries
        ]

    def score_once(self, items: Sequence[tuple[Case, list[EditResult]]]) -> list[CaseScore]:
        if self.official_prompts is not None:
            return self._score_official(items)
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

    def _score_official(self, items: Sequence[tuple[Case, list[EditResult]]]) -> list[CaseScore]:
        """ImgEdit's prompts and parsing rule (see the module docstring)."""
        texts = [self.official_prompts[case.category].replace("<edit_prompt>", case.instructions[0]) for case, _ in items]
        # basic_bench.py sends the prompt, then the original, then the edit
        answers = self.judge.ask([[case.source_image(), results[-1].image] for case, results in items], texts, text_first=True)
        scores = []
        for answer in answers:
            named = parse_imgedit_scores(answer)
            values = list(named.values())
            overall = round(sum(values) / len(values), 2) if values else None
            per = dict(zip(("compliance", "seamlessness", "fidelity"), map(float, values))) if len(values) == 3 else {}
            metrics = {"overall": overall, **{m: per.get(m) for m in ("compliance", "seamlessness", "fidelity")}}
            scores.append(CaseScore(metrics, None, {"ratings": named, "answer": answer}))
        return scores
