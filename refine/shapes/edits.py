"""ShapeEdit edits: one frozen dataclass per category, each mapping a scene to its exact target.

Example:
    >>> import random
    >>> from refine.shapes.world import Obj, Scene
    >>> from refine.shapes.edits import Recolor, apply_edit, random_edit, edit_from_dict
    >>> scene = Scene("white", (Obj("circle", "red", "large", (1, 1)),))
    >>> apply_edit(scene, Recolor((1, 1), "blue")).objects[0].color
    'blue'
    >>> edit = random_edit(scene, random.Random(0), category="move")
    >>> edit.category, apply_edit(scene, edit) != scene, edit_from_dict(edit.to_dict()) == edit
    ('move', True, True)

Categories follow ImgEdit: add, remove, replace (the shape), recolor, move, resize, background,
hybrid (two edits in one instruction, applied in order) plus swap (two objects trade places).
Objects are addressed by their cell, which is unique (one object per cell). Every edit changes the
scene (no no-ops), keeps 1-4 objects, and never gives an object the background colour:
`apply_edit` raises `InputError` naming the problem otherwise.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Union

from refine.errors import InputError
from refine.shapes.world import COLOR_NAMES, MAX_OBJECTS, POSITION_NAMES, POSITIONS, SHAPES, SIZES, Obj, Scene

CATEGORIES: tuple[str, ...] = ("add", "remove", "replace", "recolor", "move", "resize", "background", "swap", "hybrid")

Position = tuple[int, int]


def _pos(value: Any) -> Position:
    return (int(value[0]), int(value[1]))


@dataclass(frozen=True)
class Add:
    """Add `obj` in its (empty) cell."""

    obj: Obj
    category: ClassVar[str] = "add"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.category, "obj": self.obj.to_dict()}


@dataclass(frozen=True)
class Remove:
    """Remove the object in cell `position`."""

    position: Position
    category: ClassVar[str] = "remove"

    def __post_init__(self) -> None:
        object.__setattr__(self, "position", _pos(self.position))

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.category, "position": list(self.position)}


@dataclass(frozen=True)
class Replace:
    """Change the shape of the object in `position` to `shape` (colour, size, place kept)."""

    position: Position
    shape: str
    category: ClassVar[str] = "replace"

    def __post_init__(self) -> None:
        object.__setattr__(self, "position", _pos(self.position))

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.category, "position": list(self.position), "shape": self.shape}


@dataclass(frozen=True)
class Recolor:
    """Give the object in `position` the colour `color`."""

    position: Position
    color: str
    category: ClassVar[str] = "recolor"

    def __post_init__(self) -> None:
        object.__setattr__(self, "position", _pos(self.position))

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.category, "position": list(self.position), "color": self.color}


@dataclass(frozen=True)
class Move:
    """Move the object in `position` to the empty cell `to`."""

    position: Position
    to: Position
    category: ClassVar[str] = "move"

    def __post_init__(self) -> None:
        object.__setattr__(self, "position", _pos(self.position))
        object.__setattr__(self, "to", _pos(self.to))

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.category, "position": list(self.position), "to": list(self.to)}


@dataclass(frozen=True)
class Resize:
    """Make the object in `position` `size` ("small" or "large"; must differ from its size)."""

    position: Position
    size: str
    category: ClassVar[str] = "resize"

    def __post_init__(self) -> None:
        object.__setattr__(self, "position", _pos(self.position))

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.category, "position": list(self.position), "size": self.size}


@dataclass(frozen=True)
class Background:
    """Paint the background `color` (no object may have that colour)."""

    color: str
    category: ClassVar[str] = "background"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.category, "color": self.color}


@dataclass(frozen=True)
class Swap:
    """Exchange the places of the (different) objects in cells `a` and `b`."""

    a: Position
    b: Position
    category: ClassVar[str] = "swap"

    def __post_init__(self) -> None:
        object.__setattr__(self, "a", _pos(self.a))
        object.__setattr__(self, "b", _pos(self.b))

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.category, "a": list(self.a), "b": list(self.b)}


@dataclass(frozen=True)
class Hybrid:
    """Two edits in one instruction: `first`, then `second` on the result. They touch different cells."""

    first: "Edit"
    second: "Edit"
    category: ClassVar[str] = "hybrid"

    def __post_init__(self) -> None:
        if isinstance(self.first, Hybrid) or isinstance(self.second, Hybrid):
            raise InputError("a hybrid edit combines two plain edits; nest no hybrid inside another")

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.category, "first": self.first.to_dict(), "second": self.second.to_dict()}


Edit = Union[Add, Remove, Replace, Recolor, Move, Resize, Background, Swap, Hybrid]
_TYPES: dict[str, type] = {cls.category: cls for cls in (Add, Remove, Replace, Recolor, Move, Resize, Background, Swap, Hybrid)}


def edit_from_dict(data: dict[str, Any]) -> Edit:
    """Inverse of `edit.to_dict()`.

    >>> edit_from_dict({"type": "swap", "a": [0, 0], "b": [2, 2]})
    Swap(a=(0, 0), b=(2, 2))
    """
    kind = data.get("type")
    if kind not in _TYPES:
        raise InputError(f"unknown edit type {kind!r}; use one of {', '.join(CATEGORIES)}")
    if kind == "add":
        return Add(Obj.from_dict(data["obj"]))
    if kind == "hybrid":
        return Hybrid(edit_from_dict(data["first"]), edit_from_dict(data["second"]))
    fields = {k: v for k, v in data.items() if k != "type"}
    return _TYPES[kind](**fields)


def touched_cells(edit: Edit) -> tuple[Position, ...]:
    """Cells whose content the edit changes (background edits change none).

    >>> touched_cells(Move((0, 0), (2, 2)))
    ((0, 0), (2, 2))
    """
    if isinstance(edit, Add):
        return (edit.obj.position,)
    if isinstance(edit, (Remove, Replace, Recolor, Resize)):
        return (edit.position,)
    if isinstance(edit, Move):
        return (edit.position, edit.to)
    if isinstance(edit, Swap):
        return (edit.a, edit.b)
    if isinstance(edit, Hybrid):
        return touched_cells(edit.first) + touched_cells(edit.second)
    return ()


def apply_edit(scene: Scene, edit: Edit) -> Scene:
    """The exact target scene of `edit` on `scene`; raises `InputError` if the edit does not apply."""
    if isinstance(edit, Hybrid):
        first, second = set(touched_cells(edit.first)), set(touched_cells(edit.second))
        if first & second or (isinstance(edit.first, Background) and isinstance(edit.second, Background)):
            raise InputError(f"hybrid parts {edit.first} and {edit.second} touch the same thing; combine edits on different objects")
        return apply_edit(apply_edit(scene, edit.first), edit.second)
    if isinstance(edit, Background):
        _check_color(edit.color)
        if edit.color == scene.background:
            raise InputError(f"the background is already {edit.color}; pick another colour")
        if any(o.color == edit.color for o in scene.objects):
            raise InputError(f"a {edit.color} background would hide the {edit.color} object; pick a colour no object has")
        return Scene(edit.color, scene.objects)
    if isinstance(edit, Add):
        if scene.at(edit.obj.position) is not None:
            raise InputError(f"cannot add in the {POSITION_NAMES[edit.obj.position]}: it holds the {scene.at(edit.obj.position).describe()}")
        if len(scene.objects) >= MAX_OBJECTS:
            raise InputError(f"the scene already has {MAX_OBJECTS} objects; remove one before adding")
        return scene.with_object(edit.obj)
    if isinstance(edit, Swap):
        a, b = _need(scene, edit.a), _need(scene, edit.b)
        if replace(a, position=b.position) == b:
            raise InputError(f"swapping two identical objects changes nothing ({a.describe()})")
        return Scene(scene.background, tuple(o for o in scene.objects if o.position not in (a.position, b.position)) + (replace(a, position=b.position), replace(b, position=a.position)))
    obj = _need(scene, edit.position)
    if isinstance(edit, Remove):
        if len(scene.objects) <= 1:
            raise InputError("cannot remove the only object; a scene keeps at least one")
        return scene.without(obj.position)
    if isinstance(edit, Move):
        if edit.to not in POSITIONS or scene.at(edit.to) is not None:
            raise InputError(f"cannot move to {edit.to}: the cell is taken or off the grid; pick an empty cell")
        return scene.without(obj.position).with_object(replace(obj, position=edit.to))
    if isinstance(edit, Replace):
        if edit.shape not in SHAPES or edit.shape == obj.shape:
            raise InputError(f"replace needs a new shape other than {obj.shape!r} from {', '.join(SHAPES)}, got {edit.shape!r}")
        return scene.with_object(replace(obj, shape=edit.shape))
    if isinstance(edit, Recolor):
        _check_color(edit.color)
        if edit.color in (obj.color, scene.background):
            raise InputError(f"recolor to {edit.color!r} changes nothing or hides the object; pick a colour other than {obj.color} and the background")
        return scene.with_object(replace(obj, color=edit.color))
    if isinstance(edit, Resize):
        if edit.size not in SIZES or edit.size == obj.size:
            raise InputError(f"resize needs the other size than {obj.size!r}, got {edit.size!r}")
        return scene.with_object(replace(obj, size=edit.size))
    raise InputError(f"unknown edit {edit!r}; use one of the classes in refine.shapes.edits")


def _check_color(color: str) -> None:
    if color not in COLOR_NAMES:
        raise InputError(f"unknown colour {color!r}; use one of {', '.join(COLOR_NAMES)}")


def _need(scene: Scene, position: Position) -> Obj:
    obj = scene.at(position)
    if obj is None:
        raise InputError(f"no object in the {POSITION_NAMES.get(tuple(position), position)}; the scene has {scene.describe()}")
    return obj


# ---------------------------------------------------------------------------------------------
# Sampling


def feasible_categories(scene: Scene) -> list[str]:
    """Categories that have at least one valid edit on `scene`, in CATEGORIES order."""
    return [c for c in CATEGORIES if _sample(scene, c, random.Random(0)) is not None]


def random_edit(scene: Scene, rng: random.Random, category: str | None = None) -> Edit:
    """A uniformly drawn valid edit of `category` (default: a feasible category at random).

    Raises `InputError` when `category` has no valid edit on `scene` (e.g. "add" with 4 objects).
    """
    if category is None:
        options = feasible_categories(scene)
        if not options:
            raise InputError(f"no edit applies to {scene.describe()}")
        category = rng.choice(options)
    if category not in CATEGORIES:
        raise InputError(f"unknown edit category {category!r}; use one of {', '.join(CATEGORIES)}")
    edit = _sample(scene, category, rng)
    if edit is None:
        raise InputError(f"no {category} edit applies to {scene.describe()}")
    return edit


def _sample(scene: Scene, category: str, rng: random.Random, avoid: frozenset = frozenset()) -> Edit | None:
    """A uniform valid edit of `category` that touches no cell in `avoid`, or None if there is none."""
    objs = [o for o in scene.objects if o.position not in avoid]
    empty = [p for p in scene.empty_cells() if p not in avoid]
    if category == "add":  # the product of choices is large: draw each attribute instead of listing them
        if len(scene.objects) >= MAX_OBJECTS or not empty:
            return None
        colors = [c for c in COLOR_NAMES if c != scene.background]
        return Add(Obj(rng.choice(SHAPES), rng.choice(colors), rng.choice(SIZES), rng.choice(empty)))
    if category == "hybrid":
        return _sample_hybrid(scene, rng)
    if category == "remove":
        options = [Remove(o.position) for o in objs] if len(scene.objects) > 1 else []
    elif category == "replace":
        options = [Replace(o.position, s) for o in objs for s in SHAPES if s != o.shape]
    elif category == "recolor":
        options = [Recolor(o.position, c) for o in objs for c in COLOR_NAMES if c not in (o.color, scene.background)]
    elif category == "move":
        options = [Move(o.position, p) for o in objs for p in empty]
    elif category == "resize":
        options = [Resize(o.position, "small" if o.size == "large" else "large") for o in objs]
    elif category == "background":
        used = {o.color for o in scene.objects}
        options = [Background(c) for c in COLOR_NAMES if c != scene.background and c not in used]
    elif category == "swap":
        options = [Swap(a.position, b.position) for i, a in enumerate(objs) for b in objs[i + 1 :] if replace(a, position=b.position) != b]
    else:
        options = []
    return rng.choice(options) if options else None


def _sample_hybrid(scene: Scene, rng: random.Random, tries: int = 8) -> Edit | None:
    """First a uniform category and edit, then a second one on the result, on other cells."""
    plain = [c for c in CATEGORIES if c != "hybrid"]
    for _ in range(tries):
        firsts = [c for c in plain if _sample(scene, c, random.Random(0)) is not None]
        if not firsts:
            return None
        first = _sample(scene, rng.choice(firsts), rng)
        middle, taken = apply_edit(scene, first), frozenset(touched_cells(first))
        seconds = [c for c in plain if not (c == "background" and isinstance(first, Background))
                   and _sample(middle, c, random.Random(0), taken) is not None]
        if seconds:
            return Hybrid(first, _sample(middle, rng.choice(seconds), rng, taken))
    return None
