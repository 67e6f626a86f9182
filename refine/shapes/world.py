"""ShapeEdit scenes: a background colour plus 1-4 coloured shapes on a 3x3 grid, rendered exactly.

Example:
    >>> import random
    >>> from refine.shapes.world import COLORS, Obj, Scene, random_scene, render
    >>> scene = Scene("white", (Obj("circle", "red", "large", (1, 1)),))
    >>> image = render(scene)                                 # 32x32 RGB, no anti-aliasing
    >>> image.size, image.getpixel((16, 16)) == COLORS["red"], image.getpixel((0, 0)) == COLORS["white"]
    ((32, 32), True, True)
    >>> Scene.from_dict(scene.to_dict()) == scene
    True
    >>> random_scene(random.Random(0)) == random_scene(random.Random(0))    # seeded, machine-independent
    True

Geometry (stated in units of 1/32 of the image side, so 64x64 is the same picture at twice the
resolution): a 1-unit margin, then 3x3 cells of 10 units. An object sits at the centre of its cell,
(6.5 + 10 * col, 6.5 + 10 * row); a large one spans 9 units, a small one 5. Neighbouring large
objects therefore keep a 1-unit gap, and every object fits its cell, so one cell holds at most one
object and "non-overlapping" holds by construction. A pixel belongs to a shape when its centre does
(no anti-aliasing), and all boundary tests use exact binary fractions, so rendering is bit-identical
on every machine.

Colours are far apart in RGB (every pair >= 95 apart) so noise and blur cannot turn one into another.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from refine.errors import InputError

GRID = 3
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
SIZES: tuple[str, ...] = ("small", "large")
# name -> RGB. Chosen so that every pair is >= 95 apart (min: orange-yellow, red-orange ~110).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (205, 25, 35),
    "orange": (245, 125, 15),
    "yellow": (250, 230, 50),
    "green": (40, 170, 60),
    "blue": (35, 75, 215),
    "purple": (150, 40, 170),
    "white": (245, 245, 245),
    "black": (20, 20, 25),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
POSITIONS: tuple[tuple[int, int], ...] = tuple((row, col) for row in range(GRID) for col in range(GRID))
CORNERS: tuple[tuple[int, int], ...] = ((0, 0), (0, 2), (2, 0), (2, 2))
# Human names of the cells, used by instructions and by the judge's explanations.
POSITION_NAMES: dict[tuple[int, int], str] = {
    (0, 0): "top left corner",
    (0, 1): "top middle",
    (0, 2): "top right corner",
    (1, 0): "middle left",
    (1, 1): "center",
    (1, 2): "middle right",
    (2, 0): "bottom left corner",
    (2, 1): "bottom middle",
    (2, 2): "bottom right corner",
}
MAX_OBJECTS = 4

# Layout in 1/32 units (see the module docstring).
_MARGIN = 1.0
_CELL = 10.0
_HALF_EXTENT = {"small": 2.5, "large": 4.5}


@dataclass(frozen=True)
class Obj:
    """One shape: `shape` in SHAPES, `color` in COLORS, `size` "small"/"large", `position` (row, col).

    >>> Obj("triangle", "blue", "small", (0, 2)).describe()
    'small blue triangle in the top right corner'
    """

    shape: str
    color: str
    size: str
    position: tuple[int, int]

    def __post_init__(self) -> None:
        position = tuple(int(v) for v in self.position)
        object.__setattr__(self, "position", position)
        if self.shape not in SHAPES:
            raise InputError(f"unknown shape {self.shape!r}; use one of {', '.join(SHAPES)}")
        if self.color not in COLORS:
            raise InputError(f"unknown colour {self.color!r}; use one of {', '.join(COLOR_NAMES)}")
        if self.size not in SIZES:
            raise InputError(f"unknown size {self.size!r}; use 'small' or 'large'")
        if len(position) != 2 or not all(0 <= v < GRID for v in position):
            raise InputError(f"position {self.position!r} is off the {GRID}x{GRID} grid; use (row, col) with 0 <= row, col < {GRID}")

    def describe(self) -> str:
        return f"{self.size} {self.color} {self.shape} in the {POSITION_NAMES[self.position]}"

    def to_dict(self) -> dict[str, Any]:
        return {"shape": self.shape, "color": self.color, "size": self.size, "position": list(self.position)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Obj":
        return cls(data["shape"], data["color"], data["size"], tuple(data["position"]))


@dataclass(frozen=True)
class Scene:
    """A background colour name and objects (kept sorted by position, at most one per cell).

    >>> s = Scene("black", (Obj("square", "red", "large", (2, 2)), Obj("circle", "blue", "small", (0, 0))))
    >>> [o.position for o in s.objects], s.at((2, 2)).shape, s.at((1, 1))
    ([(0, 0), (2, 2)], 'square', None)
    """

    background: str
    objects: tuple[Obj, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.background not in COLORS:
            raise InputError(f"unknown background colour {self.background!r}; use one of {', '.join(COLOR_NAMES)}")
        objects = tuple(sorted(self.objects, key=lambda o: o.position))
        object.__setattr__(self, "objects", objects)
        seen: set[tuple[int, int]] = set()
        for obj in objects:
            if obj.position in seen:
                raise InputError(f"two objects in cell {obj.position}; each cell holds at most one object")
            seen.add(obj.position)
            if obj.color == self.background:
                raise InputError(f"the {obj.describe()} has the background colour {self.background!r} and would be invisible")

    def at(self, position: tuple[int, int]) -> Obj | None:
        """The object in cell `position`, or None."""
        for obj in self.objects:
            if obj.position == tuple(position):
                return obj
        return None

    def empty_cells(self) -> list[tuple[int, int]]:
        """Free cells, in reading order."""
        taken = {o.position for o in self.objects}
        return [p for p in POSITIONS if p not in taken]

    def without(self, position: tuple[int, int]) -> "Scene":
        return Scene(self.background, tuple(o for o in self.objects if o.position != tuple(position)))

    def with_object(self, obj: Obj) -> "Scene":
        """This scene with `obj` put in its cell (replacing whatever was there)."""
        return Scene(self.background, tuple(o for o in self.objects if o.position != obj.position) + (obj,))

    def describe(self) -> str:
        """One line for logs and judge explanations."""
        objs = "; ".join(o.describe() for o in self.objects) or "no objects"
        return f"{self.background} background: {objs}"

    def to_dict(self) -> dict[str, Any]:
        return {"background": self.background, "objects": [o.to_dict() for o in self.objects]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Scene":
        return cls(data["background"], tuple(Obj.from_dict(o) for o in data.get("objects", ())))


def random_scene(rng: random.Random, n_objects: int | None = None) -> Scene:
    """A random scene with `n_objects` (default: uniform 1-4) objects; only `rng` is consumed.

    >>> scene = random_scene(random.Random(3), n_objects=2)
    >>> len(scene.objects), all(o.color != scene.background for o in scene.objects)
    (2, True)
    """
    n = rng.randint(1, MAX_OBJECTS) if n_objects is None else int(n_objects)
    if not 0 <= n <= len(POSITIONS):
        raise InputError(f"n_objects={n_objects} does not fit a {GRID}x{GRID} grid; use 0..{len(POSITIONS)}")
    background = rng.choice(COLOR_NAMES)
    colors = [c for c in COLOR_NAMES if c != background]
    objects = tuple(
        Obj(rng.choice(SHAPES), rng.choice(colors), rng.choice(SIZES), position)
        for position in rng.sample(POSITIONS, n)
    )
    return Scene(background, objects)


# ---------------------------------------------------------------------------------------------
# Rendering


def check_image_size(size: int) -> int:
    """Image sides must be a positive multiple of 32 (the layout unit); returns `size` as int."""
    if int(size) != size or size < 32 or int(size) % 32:
        raise InputError(f"image size {size!r} is not supported; use a multiple of 32 (32 or 64)")
    return int(size)


def cell_center(position: tuple[int, int], size: int = 32) -> tuple[float, float]:
    """(x, y) pixel coordinates of a cell centre (pixel i covers [i, i + 1)).

    >>> cell_center((0, 0)), cell_center((2, 1), 64)
    ((6.5, 6.5), (33.0, 53.0))
    """
    scale = size / 32
    row, col = position
    return ((_MARGIN + _CELL * col + _CELL / 2 + 0.5) * scale, (_MARGIN + _CELL * row + _CELL / 2 + 0.5) * scale)


def cell_bounds(position: tuple[int, int], size: int = 32) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the pixels that belong to a cell; border cells also own the margin.

    >>> cell_bounds((0, 0)), cell_bounds((1, 2))
    ((0, 11, 0, 11), (11, 21, 21, 32))
    """
    scale = size / 32

    def span(i: int) -> tuple[int, int]:
        lo = 0 if i == 0 else int((_MARGIN + _CELL * i) * scale)
        hi = size if i == GRID - 1 else int((_MARGIN + _CELL * (i + 1)) * scale)
        return lo, hi

    (y0, y1), (x0, x1) = span(position[0]), span(position[1])
    return y0, y1, x0, x1


def half_extent(size_name: str, size: int = 32) -> float:
    """Half the side of a shape's bounding box in pixels (4.5 for large, 2.5 for small at 32)."""
    return _HALF_EXTENT[size_name] * size / 32


def shape_mask(shape: str, size_name: str, center: tuple[float, float], size: int = 32, canvas: int | None = None) -> np.ndarray:
    """Boolean (canvas, canvas) mask (default canvas = size) of a shape centred at `center` (x, y).

    `size` is the image side that sets the shape's scale; pixels are sampled at their centres.

    >>> int(shape_mask("square", "large", (6.5, 6.5)).sum()), int(shape_mask("circle", "small", (6.5, 6.5)).sum())
    (81, 21)
    """
    h = half_extent(size_name, size)
    cx, cy = center
    coords = np.arange(size if canvas is None else canvas, dtype=np.float64) + 0.5
    dx = (coords - cx)[None, :]  # (1, W)
    dy = (coords - cy)[:, None]  # (H, 1)
    adx, ady = np.abs(dx), np.abs(dy)
    if shape == "circle":
        return dx * dx + dy * dy <= h * h
    if shape == "square":
        return (adx <= h) & (ady <= h)
    if shape == "triangle":  # apex up: the half-width grows linearly from 0 at the top to h at the bottom
        return (ady <= h) & (2 * adx <= dy + h)
    if shape == "diamond":
        return adx + ady <= h
    raise InputError(f"unknown shape {shape!r}; use one of {', '.join(SHAPES)}")


def object_mask(obj: Obj, size: int = 32) -> np.ndarray:
    """Boolean (size, size) mask of the pixels `obj` covers."""
    return shape_mask(obj.shape, obj.size, cell_center(obj.position, size), size)


@lru_cache(maxsize=4096)
def _render_array(scene: Scene, size: int) -> np.ndarray:
    array = np.empty((size, size, 3), dtype=np.uint8)
    array[:] = COLORS[scene.background]
    for obj in scene.objects:
        array[object_mask(obj, size)] = COLORS[obj.color]
    array.setflags(write=False)
    return array


def render(scene: Scene, size: int = 32) -> Image.Image:
    """Render `scene` to a new RGB image of `size` x `size` (a multiple of 32), no anti-aliasing."""
    return Image.fromarray(_render_array(scene, check_image_size(size)).copy(), "RGB")


def render_array(scene: Scene, size: int = 32) -> np.ndarray:
    """Like `render` but a read-only uint8 array (H, W, 3); cached, so cheap to call repeatedly."""
    return _render_array(scene, check_image_size(size))


