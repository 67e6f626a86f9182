"""ShapeEdit data: single-turn cases, multi-turn sequences, a seeded training stream and frozen benchmarks.

Example:
    >>> from refine.shapes.data import load_split, training_stream
    >>> bench = load_split("shapes-bench")
    >>> len(bench), bench[0].id, bench[0].source_image.size
    (540, 'bench-add-direct-00', (32, 32))
    >>> request = bench[0].to_request(seed=0)
    >>> request.meta["case_id"], request.meta["category"], request.meta["phrasing"]
    ('bench-add-direct-00', 'add', 'direct')
    >>> stream = training_stream(seed=7)
    >>> next(stream).instruction == next(training_stream(seed=7)).instruction     # seeded
    True

Splits (frozen: every case is drawn from its own `random.Random` seeded by a SHA-256 of the split
name, category, phrasing and index, so they are identical on every machine and Python version):

* ``shapes-bench``: 540 single-turn cases, 30 per (category x phrasing) for the 9 categories and
  the direct / indirect phrasings. For reporting only.
* ``shapes-mt``: 120 three-turn `ShapeSequence`s; each turn draws a feasible category uniformly and
  is indirect with probability 1/2, and each instruction is phrased against the scene of its turn.
  For reporting only.
* ``shapes-val``: built as shapes-bench (same 18 strata, 30 each) from its own seeds. For every
  tuning decision: learning rates, early stopping, training-time evaluation, learning tests.
* ``shapes-mt-val``: built as shapes-mt (120 three-turn sequences) from its own seeds; the
  multi-turn tuning split.

Tune on the val splits, report on shapes-bench / shapes-mt. shapes-val is as large as shapes-bench
so that a tuning decision has the power of the number it is reported with (generating it takes
~0.3 s; tuning paths take evenly spaced subsets). No case of the val splits has the source and
target of a reported case (`case_key`), and `training_stream` never yields the source and target
of a case of any of the four splits (`reserved_case_keys`).

Every instruction, and the canonical direct rewrite of every edit, fits `MAX_TOKENS` tokens.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Sequence

from PIL import Image

from refine.errors import InputError
from refine.shapes.edits import CATEGORIES, Edit, apply_edit, edit_from_dict, feasible_categories, random_edit
from refine.shapes.instructions import MAX_TOKENS, STYLES, can_phrase, direct_phrasing, phrase, tokenize
from refine.shapes.world import Scene, check_image_size, random_scene, render
from refine.types import EditRequest

SPLITS: dict[str, str] = {
    "shapes-bench": "540 single-turn cases stratified by category x phrasing (30 each); for reporting only",
    "shapes-mt": "120 three-turn sequences; for reporting only",
    "shapes-val": "540 single-turn cases built as shapes-bench from their own seeds; for tuning",
    "shapes-mt-val": "120 three-turn sequences built as shapes-mt from their own seeds; for tuning",
}
REPORTING_SPLITS: tuple[str, ...] = ("shapes-bench", "shapes-mt")
VALIDATION_SPLITS: tuple[str, ...] = ("shapes-val", "shapes-mt-val")
MULTI_TURN_SPLITS: tuple[str, ...] = ("shapes-mt", "shapes-mt-val")
# The id prefix of each split's cases ("mtval-012-t3" does not start with "mt-").
_ID_PREFIX: dict[str, str] = {"shapes-bench": "bench", "shapes-mt": "mt", "shapes-val": "val", "shapes-mt-val": "mtval"}
BENCH_PER_STRATUM = 30
MT_SEQUENCES = 120
MT_TURNS = 3


@dataclass(frozen=True)
class ShapeCase:
    """One edit task with its exact answer: `source` --`edit`--> `target`, said as `instruction`.

    >>> from refine.shapes.world import Obj, Scene
    >>> from refine.shapes.edits import Recolor
    >>> src = Scene("white", (Obj("circle", "red", "large", (1, 1)),))
    >>> case = ShapeCase.build("demo", src, Recolor((1, 1), "blue"), "paint the circle the colour of the sky", "indirect")
    >>> case.direct_instruction, case.target.objects[0].color
    ('make the red circle blue', 'blue')
    >>> ShapeCase.from_dict(case.to_dict()) == case
    True
    """

    id: str
    category: str
    phrasing: str
    source: Scene
    edit: Edit
    target: Scene
    instruction: str
    size: int = 32

    @classmethod
    def build(cls, id: str, source: Scene, edit: Edit, instruction: str, phrasing: str = "direct", size: int = 32) -> "ShapeCase":
        """A case whose target is computed from `source` and `edit`."""
        return cls(id, edit.category, phrasing, source, edit, apply_edit(source, edit), instruction, check_image_size(size))

    @property
    def source_image(self) -> Image.Image:
        return render(self.source, self.size)

    @property
    def target_image(self) -> Image.Image:
        return render(self.target, self.size)

    @property
    def direct_instruction(self) -> str:
        """The canonical direct rewrite of this edit (what an expert thinker would say)."""
        return direct_phrasing(self.edit, self.source)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; `from_dict` rebuilds an equal case."""
        return {
            "id": self.id,
            "category": self.category,
            "phrasing": self.phrasing,
            "source": self.source.to_dict(),
            "edit": self.edit.to_dict(),
            "target": self.target.to_dict(),
            "instruction": self.instruction,
            "size": self.size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ShapeCase":
        """Rebuild a case; raises `InputError` if the stored target is not the edit's result."""
        try:
            source, edit = Scene.from_dict(data["source"]), edit_from_dict(data["edit"])
            case = cls(str(data["id"]), data.get("category", edit.category), data.get("phrasing", "direct"), source, edit,
                       Scene.from_dict(data["target"]) if "target" in data else apply_edit(source, edit),
                       str(data["instruction"]), check_image_size(int(data.get("size", 32))))
        except KeyError as err:
            raise InputError(f"shape case dict is missing the key {err}; it needs id, source, edit and instruction") from None
        if apply_edit(source, edit) != case.target:
            raise InputError(f"shape case {case.id!r}: the stored target is not what its edit produces; re-export it")
        return case

    def to_request(self, seed: int | None = None) -> EditRequest:
        """An `EditRequest` for any editor; `meta` carries what `judge_meta` needs to score the result."""
        meta = {
            "shapes_case": self.to_dict(),
            "category": self.category,
            "phrasing": self.phrasing,
            "case_id": self.id,
            "direct_instruction": self.direct_instruction,
        }
        return EditRequest(self.source_image, self.instruction, seed=seed, meta=meta)


@dataclass(frozen=True)
class ShapeSequence:
    """K chained cases: turn t edits the target of turn t-1; each instruction is said against its own scene.

    >>> seq = load_split("shapes-mt")[0]
    >>> len(seq), seq.cases[1].source == seq.cases[0].target, len(seq.scenes)
    (3, True, 4)
    """

    id: str
    cases: tuple[ShapeCase, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "cases", tuple(self.cases))
        if not self.cases:
            raise InputError(f"sequence {self.id!r} has no turns")
        for before, after in zip(self.cases, self.cases[1:]):
            if after.source != before.target:
                raise InputError(f"sequence {self.id!r}: turn {after.id!r} does not start from the target of {before.id!r}")

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def size(self) -> int:
        return self.cases[0].size

    @property
    def source(self) -> Scene:
        return self.cases[0].source

    @property
    def scenes(self) -> tuple[Scene, ...]:
        """The original scene, then the exact target after every turn (K + 1 scenes)."""
        return (self.cases[0].source, *(c.target for c in self.cases))

    @property
    def instructions(self) -> list[str]:
        return [c.instruction for c in self.cases]

    @property
    def source_image(self) -> Image.Image:
        return self.cases[0].source_image

    @property
    def target_images(self) -> list[Image.Image]:
        return [c.target_image for c in self.cases]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "cases": [c.to_dict() for c in self.cases]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ShapeSequence":
        return cls(str(data["id"]), tuple(ShapeCase.from_dict(c) for c in data["cases"]))


# ---------------------------------------------------------------------------------------------
# Generation


def seeded_rng(*parts: object) -> random.Random:
    """A `random.Random` seeded from a SHA-256 of `parts` (never Python's salted `hash()`).

    >>> seeded_rng("shapes-bench", 3).random() == seeded_rng("shapes-bench", 3).random()
    True
    """
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def make_case(rng: random.Random, category: str, phrasing: str, case_id: str, size: int = 32, scene: Scene | None = None) -> ShapeCase:
    """Draw a scene (unless given), an edit of `category` and a `phrasing` instruction that fits.

    Edits without an unambiguous indirect phrasing, or whose instruction would exceed `MAX_TOKENS`,
    are redrawn. Raises `InputError` if `category` cannot be done (e.g. "add" to a full `scene`).
    """
    if category not in CATEGORIES:
        raise InputError(f"unknown category {category!r}; use one of {', '.join(CATEGORIES)}")
    if phrasing not in STYLES:
        raise InputError(f"unknown phrasing {phrasing!r}; use 'direct' or 'indirect'")
    for _ in range(200):
        source = scene if scene is not None else random_scene(rng)
        for _ in range(6):
            try:
                edit = random_edit(source, rng, category)
            except InputError:
                break
            if not can_phrase(edit, source, phrasing) or len(tokenize(direct_phrasing(edit, source))) > MAX_TOKENS:
                continue
            try:
                instruction = phrase(edit, source, rng, phrasing)
            except InputError:
                continue
            return ShapeCase(case_id, category, phrasing, source, edit, apply_edit(source, edit), instruction, size)
    where = f"on {scene.describe()}" if scene is not None else "after 200 scenes"
    raise InputError(f"found no {phrasing} {category} edit {where}; pick another category")


def make_sequence(rng: random.Random, sequence_id: str, turns: int = MT_TURNS, size: int = 32, indirect_fraction: float = 0.5,
                  categories: Sequence[str] | None = None) -> ShapeSequence:
    """`turns` chained cases from a random scene; each turn picks a feasible category uniformly."""
    allowed = _check_categories(categories)
    for _ in range(100):
        scene, cases = random_scene(rng), []
        for turn in range(1, turns + 1):
            options = [c for c in feasible_categories(scene) if c in allowed]
            if not options:
                break
            phrasing = "indirect" if rng.random() < indirect_fraction else "direct"
            try:
                case = make_case(rng, rng.choice(options), phrasing, f"{sequence_id}-t{turn}", size, scene=scene)
            except InputError:
                break
            cases.append(case)
            scene = case.target
        if len(cases) == turns:
            return ShapeSequence(sequence_id, tuple(cases))
    raise InputError(f"could not build a {turns}-turn sequence from categories {allowed}; allow more categories")


def _check_categories(categories: Sequence[str] | None) -> list[str]:
    chosen = list(CATEGORIES if categories is None else categories)
    unknown = [c for c in chosen if c not in CATEGORIES]
    if unknown or not chosen:
        raise InputError(f"unknown or no categories {unknown or chosen!r}; use some of {', '.join(CATEGORIES)}")
    return chosen


CaseKey = tuple[Scene, Scene]  # (source, target): hashable, independent of the image size


def case_key(case: ShapeCase) -> CaseKey:
    """What identifies a task: its source scene and the exact target its edit produces.

    Equal (source, edit) gives equal keys; so do edits written in another order that do the same
    thing (`Swap(a, b)` and `Swap(b, a)`, a hybrid's two halves swapped), which are the same task
    to an editor. The instruction and the rendered size are not part of it.

    >>> from refine.shapes.edits import Swap
    >>> case = next(c for c in load_split("shapes-bench") if c.category == "swap")
    >>> turned = ShapeCase.build("x", case.source, Swap(case.edit.b, case.edit.a), "swap them")
    >>> case_key(turned) == case_key(case), case_key(case) in reserved_case_keys()
    (True, True)
    """
    return (case.source, case.target)


def split_keys(names: Sequence[str]) -> frozenset:
    """The `case_key` of every case (every turn of every sequence) of the splits `names`."""
    return frozenset(case_key(case) for name in names for case in iter_cases(name))


@lru_cache(maxsize=1)
def reserved_case_keys() -> frozenset:
    """Keys of every case of shapes-bench, shapes-mt, shapes-val and shapes-mt-val: no stream yields them."""
    return split_keys(tuple(SPLITS))


def _fresh_case(rng: random.Random, category: str, phrasing: str, case_id: str, size: int, reserved: frozenset) -> ShapeCase:
    """`make_case`, drawn again from the same `rng` while its key is in `reserved`.

    When the first draw is free (all but about one stream draw in a few thousand) the case is exactly
    `make_case`'s, so excluding reserved cases changes nothing else in a seeded stream.
    """
    for _ in range(100):
        case = make_case(rng, category, phrasing, case_id, size)
        if case_key(case) not in reserved:
            return case
    raise InputError(f"100 draws of a {phrasing} {category} case all repeat a benchmark case; allow more categories")


def _fresh_sequence(rng: random.Random, sequence_id: str, turns: int, size: int, reserved: frozenset) -> ShapeSequence:
    """`make_sequence`, drawn again from the same `rng` while any of its turns has a key in `reserved`."""
    for _ in range(100):
        sequence = make_sequence(rng, sequence_id, turns, size)
        if not any(case_key(case) in reserved for case in sequence.cases):
            return sequence
    raise InputError(f"100 draws of sequence {sequence_id!r} all repeat a benchmark case")


def training_stream(seed: int, size: int = 32, indirect_fraction: float = 0.3, categories: Sequence[str] | None = None) -> Iterator[ShapeCase]:
    """An endless stream of fresh cases; case n depends only on (seed, n), so two streams with one seed agree.

    No case has the source and target of a case of any split (`reserved_case_keys`): a draw that
    does is redrawn from the same seeded generator, so every case id `train-{seed}-{n}` is kept.

    >>> from itertools import islice
    >>> [c.category for c in islice(training_stream(0, categories=["recolor"]), 3)]
    ['recolor', 'recolor', 'recolor']
    """
    allowed = _check_categories(categories)
    if not 0.0 <= indirect_fraction <= 1.0:
        raise InputError(f"indirect_fraction={indirect_fraction} must be within [0, 1]")
    size = check_image_size(size)
    reserved = reserved_case_keys()
    index = 0
    while True:
        yield _stream_case(seed, index, size, indirect_fraction, allowed, reserved)
        index += 1


def stream_case(seed: int, index: int, size: int = 32, indirect_fraction: float = 0.3, categories: Sequence[str] | None = None,
                *, skip_reserved: bool = True) -> ShapeCase:
    """Case `index` of `training_stream(seed, size, indirect_fraction, categories)`.

    `skip_reserved=False` gives the draw as the stream made it before it skipped the splits' cases:
    for analyses of what older training runs saw (benchmarks/shapes_overlap.py), never for training.

    >>> hit = stream_case(0, 2631, skip_reserved=False)      # a draw that repeats bench-resize-direct-16
    >>> case_key(hit) == case_key(find_case("bench-resize-direct-16")), case_key(stream_case(0, 2631)) in reserved_case_keys()
    (True, False)
    """
    reserved = reserved_case_keys() if skip_reserved else frozenset()
    return _stream_case(seed, index, check_image_size(size), indirect_fraction, _check_categories(categories), reserved)


def _stream_case(seed: int, index: int, size: int, indirect_fraction: float, allowed: Sequence[str], reserved: frozenset) -> ShapeCase:
    rng = seeded_rng("train", seed, index)
    category = rng.choice(allowed)
    phrasing = "indirect" if rng.random() < indirect_fraction else "direct"
    return _fresh_case(rng, category, phrasing, f"train-{seed}-{index}", size, reserved)


@lru_cache(maxsize=8)
def _split(name: str, size: int) -> tuple:
    if name not in SPLITS:
        raise InputError(f"unknown split {name!r}; use one of {', '.join(SPLITS)}")
    # The reported splits are drawn as they always were; the val splits skip their keys.
    reserved = frozenset() if name in REPORTING_SPLITS else split_keys(REPORTING_SPLITS)
    prefix = _ID_PREFIX[name]
    if name in MULTI_TURN_SPLITS:
        return tuple(_fresh_sequence(seeded_rng(name, i), f"{prefix}-{i:03d}", MT_TURNS, size, reserved) for i in range(MT_SEQUENCES))
    return tuple(
        _fresh_case(seeded_rng(name, category, phrasing, i), category, phrasing, f"{prefix}-{category}-{phrasing}-{i:02d}", size, reserved)
        for category in CATEGORIES
        for phrasing in STYLES
        for i in range(BENCH_PER_STRATUM)
    )


def load_split(name: str, size: int = 32) -> list:
    """The frozen split `name`: a list of `ShapeCase` (shapes-bench, shapes-val) or `ShapeSequence` (shapes-mt, shapes-mt-val)."""
    return list(_split(name, check_image_size(size)))


def split_hash(name: str, size: int = 32) -> str:
    """SHA-256 of the split's JSON records: equal on every machine (the tests pin it)."""
    digest = hashlib.sha256()
    for item in load_split(name, size):
        digest.update(json.dumps(item.to_dict(), sort_keys=True).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def find_case(case_id: str, size: int = 32) -> ShapeCase:
    """The case with id `case_id` of any split ("bench-...", "val-...", a turn "mt-007-t2" or "mtval-007-t2").

    >>> find_case("mt-000-t2").id, find_case("val-move-indirect-03").id
    ('mt-000-t2', 'val-move-indirect-03')
    """
    for name, prefix in _ID_PREFIX.items():
        if case_id.startswith(f"{prefix}-"):
            for case in iter_cases(name, size):
                if case.id == case_id:
                    return case
    raise InputError(
        f"no benchmark case {case_id!r}; ids look like 'bench-recolor-indirect-07', 'val-move-direct-03', 'mt-012-t3' "
        "or 'mtval-012-t3' (see `refine shapes show`)"
    )


def iter_cases(items: str | Sequence[ShapeCase | ShapeSequence], size: int = 32) -> Iterator[ShapeCase]:
    """Plain iterator over the cases of a split name or of a list of cases/sequences (turns flattened)."""
    for item in load_split(items, size) if isinstance(items, str) else items:
        if isinstance(item, ShapeSequence):
            yield from item.cases
        else:
            yield item


class ShapeDataset:
    """A map-style torch dataset (DataLoader accepts any object with __len__/__getitem__) over cases.

    Items are dicts: "source", "target" float tensors (3, H, W) in [0, 1]; "instruction",
    "direct_instruction", "case_id", "category", "phrasing" strings. torch is imported on first use.

    >>> data = ShapeDataset("shapes-bench")
    >>> item = data[0]
    >>> len(data), tuple(item["source"].shape), item["case_id"]
    (540, (3, 32, 32), 'bench-add-direct-00')
    """

    def __init__(self, cases: str | Sequence[ShapeCase | ShapeSequence], size: int = 32) -> None:
        self.cases = list(iter_cases(cases, size))

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from refine.images import to_tensor

        case = self.cases[index]
        return {
            "source": to_tensor(case.source_image),
            "target": to_tensor(case.target_image),
            "instruction": case.instruction,
            "direct_instruction": case.direct_instruction,
            "case_id": case.id,
            "category": case.category,
            "phrasing": case.phrasing,
        }


def export_split(name: str, folder: str | Path, size: int = 32) -> Path:
    """Write split `name` as PNGs under `folder/images/` plus one JSONL file; returns the JSONL path.

    shapes-bench, shapes-val -> `cases.jsonl`, one line per case with `source_image`/`target_image` paths
    (relative to `folder`), the instructions and the full `case` dict. shapes-mt, shapes-mt-val -> `sequences.jsonl`,
    one line per sequence with `source_image`, per-turn `turns` (instruction, target image) and
    the full `sequence` dict.
    """
    folder = Path(folder)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    items = load_split(name, size)

    def save(image: Image.Image, stem: str) -> str:
        image.save(images / f"{stem}.png")
        return f"images/{stem}.png"

    records = []
    for item in items:
        if isinstance(item, ShapeSequence):
            turns = [_turn_record(case, save(case.target_image, f"{case.id}_target")) for case in item.cases]
            records.append({"id": item.id, "source_image": save(item.source_image, f"{item.id}_source"), "turns": turns, "sequence": item.to_dict()})
        else:
            record = _turn_record(item, save(item.target_image, f"{item.id}_target"))
            records.append({**record, "source_image": save(item.source_image, f"{item.id}_source"), "case": item.to_dict()})
    path = folder / ("sequences.jsonl" if name in MULTI_TURN_SPLITS else "cases.jsonl")
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _turn_record(case: ShapeCase, target_image: str) -> dict[str, Any]:
    return {
        "id": case.id,
        "category": case.category,
        "phrasing": case.phrasing,
        "instruction": case.instruction,
        "direct_instruction": case.direct_instruction,
        "target_image": target_image,
    }
