"""ShapeEdit instructions: direct and indirect (reasoning) phrasings of every edit, from a closed vocabulary.

Example:
    >>> import random
    >>> from refine.shapes.world import Obj, Scene
    >>> from refine.shapes.edits import Recolor, Remove
    >>> from refine.shapes.instructions import direct_phrasing, phrase, tokenize, VOCABULARY
    >>> scene = Scene("white", (Obj("circle", "red", "large", (0, 0)), Obj("triangle", "green", "small", (2, 2))))
    >>> direct_phrasing(Recolor((0, 0), "blue"), scene)
    'make the red circle blue'
    >>> text = phrase(Remove((2, 2)), scene, random.Random(0), style="indirect")
    >>> "green triangle" in text, all(word in VOCABULARY for word in tokenize(text))
    (False, True)

* **Direct** phrasings name the object by its colour and shape (adding the size, then the cell, only
  when needed to make it unique) and the change by its value: "make the red circle blue".
  `direct_phrasing` is the canonical one (the first template, deterministic): the ground-truth
  rewrite an expert "thinker" would produce. `phrase(..., style="direct")` draws among paraphrases.
* **Indirect** phrasings need reasoning or reference resolution: riddles for shapes ("the shape with
  three corners") and colours ("the colour of the sky"), superlatives ("the largest object"),
  spatial relations ("the object to the left of the blue square", "directly below ..."), relative
  moves ("one cell up", "the opposite corner", "the empty corner") and references to other objects
  ("the same colour as the triangle"). Every referring expression is checked against the scene and
  used only when it picks out exactly one object; "left of" must hold both read strictly (same row)
  and loosely (any column to the left), so either reading resolves to the same object.
* Hybrid instructions are read in order: the second part is phrased against the scene after the first.

Every word any template can produce is in `VOCABULARY` (sorted, lower case, punctuation split off
as by `tokenize`), and no generated instruction is longer than `MAX_TOKENS` tokens.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable

from refine.errors import InputError
from refine.shapes.edits import Add, Edit, Hybrid, apply_edit
from refine.shapes.world import COLOR_NAMES, CORNERS, GRID, POSITION_NAMES, SHAPES, SIZES, Obj, Scene

STYLES = ("direct", "indirect")
# Longest instruction in tokens; the ShapeEdit editor's tokenizer keeps 32 positions (one is [CLS]).
MAX_TOKENS = 30

# Riddles name a set of shapes; a riddle refers to an object only if it is the one object whose shape is in the set.
SHAPE_RIDDLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("round shape", ("circle",)),
    ("shape with no corners", ("circle",)),
    ("shape with three corners", ("triangle",)),
    ("shape with three sides", ("triangle",)),
    ("shape like a box", ("square",)),
    ("shape like a kite", ("diamond",)),
    ("shape with four corners", ("square", "diamond")),
)
COLOR_THINGS: dict[str, tuple[str, ...]] = {
    "red": ("a tomato", "a strawberry"),
    "orange": ("a carrot", "a pumpkin"),
    "yellow": ("a lemon", "a banana"),
    "green": ("grass", "a leaf"),
    "blue": ("the sky", "the sea"),
    "purple": ("a grape", "an eggplant"),
    "white": ("snow", "milk"),
    "black": ("coal", "a crow"),
}
# (row, col) step and the words for it, as a direction of motion and as a relation to an anchor.
STEPS = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
RELATIONS = {"up": "above", "down": "below", "left": "to the left of", "right": "to the right of"}

# Verb templates: the first of each list is the canonical direct phrasing.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "add": ("add {thing} {where}", "put {thing} {where}", "draw {thing} {where}", "place {thing} {where}"),
    "remove": ("remove {obj}", "delete {obj}", "take away {obj}", "erase {obj}"),
    "replace": ("replace {obj} with {shape}", "turn {obj} into {shape}", "change {obj} into {shape}", "make {obj} {shape}"),
    "recolor": ("make {obj} {color}", "paint {obj} {color}", "change the colour of {obj} to {color}", "turn {obj} {color}", "colour {obj} {color}"),
    "move": ("move {obj} {where}", "shift {obj} {where}", "drag {obj} {where}", "bring {obj} {where}"),
    "resize_large": ("make {obj} bigger", "make {obj} larger", "enlarge {obj}", "increase the size of {obj}"),
    "resize_small": ("make {obj} smaller", "shrink {obj}", "reduce the size of {obj}", "make {obj} small"),
    "resize_like": ("make {obj} the same size as {other}", "make {obj} as big as {other}", "resize {obj} to match {other}"),
    "background": ("make the background {color}", "change the background to {color}", "paint the background {color}", "turn the background {color}", "set the background colour to {color}"),
    "swap": ("swap {a} and {b}", "exchange the places of {a} and {b}", "switch {a} and {b}", "let {a} and {b} trade places"),
    "hybrid": ("{x}, then {y}", "{x} and {y}", "first {x}, then {y}", "{x}, and then {y}"),
}
# Phrase patterns filled into the templates (listed here so VOCABULARY can be derived from them).
PHRASES: dict[str, str] = {
    "obj": "the {color} {shape}",
    "obj_size": "the {size} {color} {shape}",
    "obj_cell": "the {color} {shape} in the {cell}",
    "obj_shape": "the {shape}",
    "obj_color": "the {color} object",
    "obj_riddle": "the {riddle}",
    "obj_color_riddle": "the {color} {riddle}",
    "obj_shape_thing": "the {shape} the colour of {thing}",
    "obj_thing": "the object the colour of {thing}",
    "obj_largest": "the largest object",
    "obj_biggest": "the biggest object",
    "obj_smallest": "the smallest object",
    "obj_relation": "the object {relation} {anchor}",
    "obj_in_cell": "the object in the {cell}",
    "color_thing": "the colour of {thing}",
    "color_like": "the same colour as {other}",
    "shape": "a {shape}",
    "shape_riddle": "a {riddle}",
    "shape_like": "the same shape as {other}",
    "new": "a {size} {color} {shape}",
    "new_riddle": "a {size} {color} {riddle}",
    "new_thing": "a {size} {shape} the colour of {thing}",
    "new_like": "a {size} {shape} the same colour as {other}",
    "in_cell": "in the {cell}",
    "to_cell": "to the {cell}",
    "beside": "directly {relation} {anchor}",
    "empty_corner_in": "in the empty corner",
    "empty_corner_to": "to the empty corner",
    "opposite": "to the opposite corner",
    "step": "one cell {direction}",
}

_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-case words with punctuation split off (what the ShapeEdit editor's tokenizer does).

    >>> tokenize("First move the circle, then add a Square.")
    ['first', 'move', 'the', 'circle', ',', 'then', 'add', 'a', 'square', '.']
    """
    return _TOKEN.findall(text.lower())


@dataclass(frozen=True)
class _Option:
    """One way to say an edit: verb templates plus the phrases to fill in; `indirect` if it needs reasoning."""

    templates: tuple[str, ...]
    fills: tuple[tuple[str, str], ...]
    indirect: bool

    def render(self, template: str) -> str:
        return template.format(**dict(self.fills))


def _fill(name: str, **values: str) -> str:
    return PHRASES[name].format(**values)


# ---------------------------------------------------------------------------------------------
# Referring expressions. Each is a (phrase, predicate) pair; it is used only if exactly one object
# of the scene satisfies the predicate and that object is the target.


def _unique(scene: Scene, target: Obj, predicate: Callable[[Obj], bool]) -> bool:
    return [o for o in scene.objects if predicate(o)] == [target]


def direct_ref(scene: Scene, position: tuple[int, int]) -> str:
    """The canonical name of the object in `position`: colour + shape, then + size, then + cell.

    >>> scene = Scene("white", (Obj("circle", "red", "large", (0, 0)), Obj("circle", "red", "small", (2, 2))))
    >>> direct_ref(scene, (2, 2))
    'the small red circle'
    """
    obj = scene.at(position)
    if obj is None:
        raise InputError(f"no object in the {POSITION_NAMES.get(tuple(position), position)} to refer to")
    return _anchor_ref(scene, obj) or _fill("obj_cell", color=obj.color, shape=obj.shape, cell=POSITION_NAMES[obj.position])


def _anchor_ref(scene: Scene, obj: Obj) -> str | None:
    """The canonical name if it needs no cell (anchors inside longer phrases must not contain "in the")."""
    if _unique(scene, obj, lambda o: (o.color, o.shape) == (obj.color, obj.shape)):
        return _fill("obj", color=obj.color, shape=obj.shape)
    if _unique(scene, obj, lambda o: (o.size, o.color, o.shape) == (obj.size, obj.color, obj.shape)):
        return _fill("obj_size", size=obj.size, color=obj.color, shape=obj.shape)
    return None


def _plain_refs(scene: Scene, obj: Obj) -> list[str]:
    """Attribute names other than the canonical one ("the circle", "the red object")."""
    refs = []
    if _unique(scene, obj, lambda o: o.shape == obj.shape):
        refs.append(_fill("obj_shape", shape=obj.shape))
    if _unique(scene, obj, lambda o: o.color == obj.color):
        refs.append(_fill("obj_color", color=obj.color))
    return refs


def _indirect_refs(scene: Scene, obj: Obj, colour_riddles: bool = True) -> list[str]:
    """Names that need reasoning: riddles, superlatives, relations to an anchor, the cell."""
    refs = []
    for riddle, shapes in SHAPE_RIDDLES:
        if obj.shape in shapes:
            if _unique(scene, obj, lambda o, s=shapes: o.shape in s):
                refs.append(_fill("obj_riddle", riddle=riddle))
            elif _unique(scene, obj, lambda o, s=shapes: o.shape in s and o.color == obj.color):
                refs.append(_fill("obj_color_riddle", color=obj.color, riddle=riddle))
    if colour_riddles:  # not for recolor: "make the object the colour of the sky red" would not parse
        for thing in COLOR_THINGS[obj.color]:
            if _unique(scene, obj, lambda o: o.color == obj.color):
                refs.append(_fill("obj_thing", thing=thing))
            elif _unique(scene, obj, lambda o: (o.color, o.shape) == (obj.color, obj.shape)):
                refs.append(_fill("obj_shape_thing", shape=obj.shape, thing=thing))
    if len(scene.objects) >= 2 and _unique(scene, obj, lambda o: o.size == obj.size):
        names = ("obj_largest", "obj_biggest") if obj.size == "large" else ("obj_smallest",)
        refs.extend(PHRASES[name] for name in names)
    for anchor in scene.objects:
        anchor_name = _anchor_ref(scene, anchor) if anchor is not obj else None
        if anchor_name is None:
            continue
        for direction, (dr, dc) in STEPS.items():
            if related(obj, anchor, dr, dc, strict=True) and _unique(scene, obj, lambda o: o is not anchor and related(o, anchor, dr, dc, strict=False)):
                refs.append(_fill("obj_relation", relation=RELATIONS[direction], anchor=anchor_name))
    refs.append(_fill("obj_in_cell", cell=POSITION_NAMES[obj.position]))
    return refs


def related(obj: Obj, anchor: Obj, dr: int, dc: int, strict: bool) -> bool:
    """Is `obj` in direction (dr, dc) of `anchor`? strict: same row/column; loose: anywhere on that side.

    "the object above X" is said of an object strictly above X when it is the only one loosely above.
    """
    (r, c), (ar, ac) = obj.position, anchor.position
    if dr:
        return (r - ar) * dr > 0 and (c == ac or not strict)
    return (c - ac) * dc > 0 and (r == ar or not strict)


def _obj_options(scene: Scene, position: tuple[int, int], colour_riddles: bool = True) -> list[tuple[str, bool]]:
    """(name, indirect) pairs for the object in `position`; the canonical name first."""
    obj = scene.at(position)
    if obj is None:
        raise InputError(f"no object in the {POSITION_NAMES.get(tuple(position), position)} to refer to")
    canonical = direct_ref(scene, position)
    plain = [(r, False) for r in _plain_refs(scene, obj) if r != canonical]
    return [(canonical, False), *plain, *((r, True) for r in _indirect_refs(scene, obj, colour_riddles))]


def object_names(scene: Scene, position: tuple[int, int]) -> list[str]:
    """Every name the phrasings give the object in `position`: canonical, plain, riddles, superlatives, relations, cell.

    >>> scene = Scene("white", (Obj("triangle", "red", "large", (0, 0)), Obj("circle", "blue", "small", (2, 2))))
    >>> object_names(scene, (0, 0))[:4]
    ['the red triangle', 'the triangle', 'the red object', 'the shape with three corners']
    """
    return [name for name, _ in _obj_options(scene, position)]


def _others_like(scene: Scene, exclude: Obj | None, predicate: Callable[[Obj], bool]) -> list[str]:
    """Canonical names of other objects satisfying `predicate` (for "the same colour as X")."""
    names = []
    for other in scene.objects:
        if other is not exclude and predicate(other):
            name = _anchor_ref(scene, other)
            if name is not None:
                names.append(name)
    return names


def _shape_riddles(shape: str) -> list[str]:
    return [riddle for riddle, shapes in SHAPE_RIDDLES if shapes == (shape,)]


# ---------------------------------------------------------------------------------------------
# Options per edit category


def _options(edit: Edit, scene: Scene) -> list[_Option]:
    """Every (direct or indirect) way to say a non-hybrid `edit` on `scene`; the canonical one first."""
    kind = edit.category
    if kind == "add":
        return _add_options(edit, scene)
    if kind == "background":
        colours = [(edit.color, False)] + [(_fill("color_thing", thing=t), True) for t in COLOR_THINGS[edit.color]]
        return [_Option(TEMPLATES["background"], (("color", c),), ind) for c, ind in colours]
    if kind == "swap":
        a_names, b_names = _obj_options(scene, edit.a), _obj_options(scene, edit.b)
        return [_Option(TEMPLATES["swap"], (("a", a), ("b", b)), ia or ib) for a, ia in a_names for b, ib in b_names if a != b]
    obj = scene.at(edit.position)
    if obj is None:
        raise InputError(f"{edit} refers to an empty cell of {scene.describe()}")
    names = _obj_options(scene, edit.position, colour_riddles=kind != "recolor")
    if kind == "remove":
        return [_Option(TEMPLATES["remove"], (("obj", n),), ind) for n, ind in names]
    if kind == "recolor":
        colours = [(edit.color, False)] + [(_fill("color_thing", thing=t), True) for t in COLOR_THINGS[edit.color]]
        colours += [(_fill("color_like", other=o), True) for o in _others_like(scene, obj, lambda o: o.color == edit.color)]
        return _product(TEMPLATES["recolor"], "obj", names, "color", colours)
    if kind == "replace":
        shapes = [(_fill("shape", shape=edit.shape), False)] + [(_fill("shape_riddle", riddle=r), True) for r in _shape_riddles(edit.shape)]
        shapes += [(_fill("shape_like", other=o), True) for o in _others_like(scene, obj, lambda o: o.shape == edit.shape)]
        return _product(TEMPLATES["replace"], "obj", names, "shape", shapes)
    if kind == "resize":
        verbs = TEMPLATES["resize_large" if edit.size == "large" else "resize_small"]
        options = [_Option(verbs, (("obj", n),), ind) for n, ind in names]
        likes = [(o, True) for o in _others_like(scene, obj, lambda o: o.size == edit.size)]
        return options + _product(TEMPLATES["resize_like"], "obj", names, "other", likes)
    if kind == "move":
        return _product(TEMPLATES["move"], "obj", names, "where", _move_targets(scene, obj, edit.to))
    raise InputError(f"cannot phrase {edit!r}")


def _product(templates: tuple[str, ...], a: str, a_values, b: str, b_values) -> list[_Option]:
    return [_Option(templates, ((a, va), (b, vb)), ia or ib) for va, ia in a_values for vb, ib in b_values]


def _places(scene: Scene, cell: tuple[int, int], moving: Obj | None, verb: str) -> list[tuple[str, bool]]:
    """Ways to name an empty `cell` as a destination: by name, beside an anchor, "the empty corner"."""
    out = [(_fill(verb, cell=POSITION_NAMES[cell]), False)]
    for anchor in scene.objects:
        anchor_name = _anchor_ref(scene, anchor) if anchor is not moving else None
        if anchor_name is None:
            continue
        for direction, (dr, dc) in STEPS.items():
            if (anchor.position[0] + dr, anchor.position[1] + dc) == cell:
                out.append((_fill("beside", relation=RELATIONS[direction], anchor=anchor_name), True))
    empty_corners = [c for c in CORNERS if scene.at(c) is None]
    if empty_corners == [cell]:
        out.append((PHRASES["empty_corner_to" if verb == "to_cell" else "empty_corner_in"], True))
    return out


def _move_targets(scene: Scene, obj: Obj, to: tuple[int, int]) -> list[tuple[str, bool]]:
    out = _places(scene, to, obj, "to_cell")
    (r, c), (tr, tc) = obj.position, to
    for direction, (dr, dc) in STEPS.items():
        if (r + dr, c + dc) == (tr, tc):
            out.append((_fill("step", direction=direction), True))
    if obj.position in CORNERS and (tr, tc) == (GRID - 1 - r, GRID - 1 - c):
        out.append((PHRASES["opposite"], True))
    return out


def _add_options(edit: Add, scene: Scene) -> list[_Option]:
    new = edit.obj
    things = [(_fill("new", size=new.size, color=new.color, shape=new.shape), False)]
    things += [(_fill("new_riddle", size=new.size, color=new.color, riddle=r), True) for r in _shape_riddles(new.shape)]
    things += [(_fill("new_thing", size=new.size, shape=new.shape, thing=t), True) for t in COLOR_THINGS[new.color]]
    things += [(_fill("new_like", size=new.size, shape=new.shape, other=o), True) for o in _others_like(scene, None, lambda o: o.color == new.color)]
    return _product(TEMPLATES["add"], "thing", things, "where", _places(scene, new.position, None, "in_cell"))


# ---------------------------------------------------------------------------------------------
# Public functions


def direct_phrasing(edit: Edit, scene: Scene) -> str:
    """The canonical direct instruction for `edit` on `scene` (deterministic; no rng).

    >>> from refine.shapes.edits import Move, Hybrid, Background
    >>> scene = Scene("white", (Obj("square", "blue", "small", (1, 1)),))
    >>> direct_phrasing(Hybrid(Move((1, 1), (0, 0)), Background("black")), scene)
    'move the blue square to the top left corner, then make the background black'
    """
    if isinstance(edit, Hybrid):
        middle = apply_edit(scene, edit.first)
        return TEMPLATES["hybrid"][0].format(x=direct_phrasing(edit.first, scene), y=direct_phrasing(edit.second, middle))
    apply_edit(scene, edit)  # refuse edits that do not apply, with the reason
    option = _options(edit, scene)[0]
    return option.render(option.templates[0])


def phrase(edit: Edit, scene: Scene, rng: random.Random, style: str = "direct") -> str:
    """A random paraphrase of `edit` on `scene` in `style` ("direct" or "indirect").

    Indirect: every option needs at least one reasoning step; raises `InputError` when the scene
    offers no unambiguous indirect way to say this edit (callers then draw another edit). At most
    `MAX_TOKENS` tokens.
    """
    if style not in STYLES:
        raise InputError(f"unknown phrasing style {style!r}; use 'direct' or 'indirect'")
    apply_edit(scene, edit)
    for _ in range(32):
        text = _draw(edit, scene, rng, style)
        if text is None:
            break
        if len(tokenize(text)) <= MAX_TOKENS:
            return text
    raise InputError(f"no {style} phrasing of {edit!r} fits {scene.describe()} in {MAX_TOKENS} tokens; draw another edit")


def can_phrase(edit: Edit, scene: Scene, style: str) -> bool:
    """True when `phrase(edit, scene, rng, style)` has at least one option (ignoring length)."""
    if isinstance(edit, Hybrid):
        middle = apply_edit(scene, edit.first)
        return style == "direct" or can_phrase(edit.first, scene, style) or can_phrase(edit.second, middle, style)
    return any(o.indirect == (style == "indirect") for o in _options(edit, scene))


def _draw(edit: Edit, scene: Scene, rng: random.Random, style: str) -> str | None:
    if isinstance(edit, Hybrid):
        middle = apply_edit(scene, edit.first)
        if style == "direct":
            styles = [("direct", "direct")]
        else:
            styles = [s for s in (("indirect", "direct"), ("direct", "indirect"), ("indirect", "indirect"))
                      if can_phrase(edit.first, scene, s[0]) and can_phrase(edit.second, middle, s[1])]
        if not styles:
            return None
        first_style, second_style = rng.choice(styles)
        x, y = _draw(edit.first, scene, rng, first_style), _draw(edit.second, middle, rng, second_style)
        return rng.choice(TEMPLATES["hybrid"]).format(x=x, y=y)
    options = [o for o in _options(edit, scene) if o.indirect == (style == "indirect")]
    if not options:
        return None
    option = rng.choice(options)
    return option.render(rng.choice(option.templates))


def _vocabulary() -> list[str]:
    words: set[str] = set()
    texts = [t for group in TEMPLATES.values() for t in group] + list(PHRASES.values())
    texts += [r for r, _ in SHAPE_RIDDLES] + [t for things in COLOR_THINGS.values() for t in things]
    texts += list(POSITION_NAMES.values()) + list(STEPS) + list(RELATIONS.values())
    texts += list(SHAPES) + list(COLOR_NAMES) + list(SIZES)
    for text in texts:
        words.update(tokenize(re.sub(r"\{\w+\}", " ", text)))
    return sorted(words)


VOCABULARY: list[str] = _vocabulary()
