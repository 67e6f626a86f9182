"""ShapeEdit's judge: parse an image back into a scene, then score instruction following, consistency, quality.

Example:
    >>> from refine.shapes.data import load_split
    >>> from refine.shapes.judge import judge_edit, parse_scene
    >>> case = load_split("shapes-bench")[0]
    >>> parse_scene(case.target_image) == case.target
    True
    >>> score = judge_edit(case.source_image, case.target_image, case)
    >>> score.if_, score.cc, score.pq, score.overall
    (1.0, 1.0, 1.0, 1.0)
    >>> judge_edit(case.source_image, case.source_image, case).if_      # nothing was done
    0.0

Parsing is analysis by synthesis. The background is the most common palette colour (objects cover
at most a third of the image). Each of the 9 cells then gets the hypothesis (colour x shape x size
x blur x 1-pixel shift) whose rendering best explains its pixels in least squares, or "empty" when
no hypothesis explains enough; the error of every hypothesis comes from one matrix product, since
``|x - bg - a (c - bg)|^2`` expands into terms linear in the template ``a``. Blurred templates make
the fit robust to the soft edges and noise a diffusion model produces, and colours are inferred
from the whole shape, not pixel by pixel (the blurred rim of a red shape on yellow is orange, yet
it is not an orange object). Finally the parsed scene is re-rendered with the fitted blur and
shifts; pixels it fails to explain (residual > 60 in RGB units) are "stray" and a cell with several
of them holds clutter.

Scores (single turn, source S -> expected target T, parsed output O):

* IF in [0, 1]: mean credit over the changes the edit requires (derived from S vs T): a new
  background colour; a cell that must empty; an object that must appear (1/4 for something there,
  + 1/4 per right attribute); an object whose attributes must change (fraction of the changed
  attributes now right). Clutter halves a credit. IF = 1 exactly when every change is fully right.
* CC in [0, 1]: the share of what must stay that stayed: the background (when not edited), every
  untouched object (fraction of its attributes kept), the attributes of an edited object the edit
  does not change (a recolor keeps the shape), and one failed item per spurious object or clutter
  in a cell that must stay empty.
* PQ in [0, 1]: noise (RMS residual) and off-palette colour, softness (fitted blur) and stray
  pixels, multiplied.
* overall = sqrt(IF * CC); GEdit-Bench scales: G_SC = 10 IF, G_PQ = 10 PQ, G_O = sqrt(G_SC G_PQ).
* Multi-turn (`judge_sequence`): per-turn IF (against that turn's exact source/target), CC against
  the original scene (everything no turn so far has touched), and EdiVal's success at turn t: every
  turn up to t fully followed (IF = 1, and CC vs the original >= `cc_threshold`, default 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from refine.errors import InputError
from refine.images import load_image
from refine.shapes.data import ShapeCase, ShapeSequence
from refine.shapes.world import (
    COLOR_NAMES,
    COLORS,
    POSITION_NAMES,
    POSITIONS,
    SHAPES,
    SIZES,
    Obj,
    Scene,
    cell_bounds,
    cell_center,
    check_image_size,
    render_array,
    shape_mask,
)

ATTRIBUTES = ("shape", "color", "size")
# Gaussian blur levels (pixels) the fitted templates may carry.
BLURS = (0.0, 0.6, 1.0, 1.5)
# A pixel whose colour is further than this (Euclidean, 0-255 RGB) from the re-rendered parse is stray.
# Noise of sigma 8/255 almost never gets there (P(chi_3 > 7.5) ~ 1e-11); a wrong colour always does.
STRAY_DISTANCE = 60.0
_PALETTE = np.array([COLORS[c] for c in COLOR_NAMES], dtype=np.float64)  # (8, 3)


# ---------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True)
class CellFit:
    """What the parser saw in one cell: the object (or None), clutter, and the fitted blur/shift."""

    position: tuple[int, int]
    obj: Obj | None
    clutter: bool
    stray_pixels: int
    blur: float = 0.0
    shift: tuple[int, int] = (0, 0)

    @property
    def name(self) -> str:
        """What is there, without an article: "small red circle with stray marks", "unrecognisable marks", "nothing"."""
        if self.obj is None:
            return "unrecognisable marks" if self.clutter else "nothing"
        return f"{self.obj.size} {self.obj.color} {self.obj.shape}" + (" with stray marks" if self.clutter else "")

    def describe(self) -> str:
        return self.name if self.obj is None else f"a {self.name}"


@dataclass(frozen=True)
class ParsedScene:
    """The parse of an image: `scene` plus per-cell fits and the quality measurements behind PQ."""

    scene: Scene
    cells: tuple[CellFit, ...]
    noise_rms: float
    stray_pixels: int
    mean_blur: float
    pq: float

    def cell(self, position: tuple[int, int]) -> CellFit:
        return self.cells[POSITIONS.index(tuple(position))]


@dataclass(frozen=True)
class _Bank:
    """Per-image-size template bank: every hypothesis rendered inside every cell.

    Cells own different pixel counts (border cells also own the margin), so each cell's pixels are
    listed in `pixels` (flat indices) padded to a common length; `valid` marks the real ones.
    """

    size: int
    keys: tuple[tuple[str, str, float, int, int], ...]  # (shape, size, blur, dy, dx) per template
    pixels: np.ndarray  # (9, P) flat pixel index per cell slot
    valid: np.ndarray  # (9, P) 1.0 where the slot is a real pixel of the cell
    templates: np.ndarray  # (9, K, P) alpha of each template over each cell's pixels (0 in padding)
    energy: np.ndarray  # (9, K) sum of squared alpha
    canvases: dict  # (shape, size, blur) -> (3S, 3S) alpha with the object at the middle cell + (S, S)


@lru_cache(maxsize=4)
def _bank(size: int) -> _Bank:
    shifts = (-1, 0, 1)  # a pixel either way: editors often draw a shape slightly off its cell centre
    cx, cy = cell_center((1, 1), size)
    canvases = {}
    for shape in SHAPES:
        for size_name in SIZES:
            mask = shape_mask(shape, size_name, (cx + size, cy + size), size, canvas=3 * size).astype(np.float64)
            for blur in BLURS:
                canvases[shape, size_name, blur] = gaussian_filter(mask, blur, mode="constant") if blur else mask
    keys = tuple((shape, size_name, blur, dy, dx) for (shape, size_name, blur) in canvases for dy in shifts for dx in shifts)
    regions = [cell_bounds(position, size) for position in POSITIONS]
    width = max((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in regions)
    pixels = np.zeros((len(POSITIONS), width), dtype=np.int64)
    valid = np.zeros((len(POSITIONS), width))
    templates = np.zeros((len(POSITIONS), len(keys), width))
    index = np.arange(size * size).reshape(size, size)
    for cell, (position, (y0, y1, x0, x1)) in enumerate(zip(POSITIONS, regions)):
        count = (y1 - y0) * (x1 - x0)
        pixels[cell, :count] = index[y0:y1, x0:x1].ravel()
        valid[cell, :count] = 1.0
        for k, key in enumerate(keys):
            templates[cell, k, :count] = _full_alpha(canvases, size, position, key)[y0:y1, x0:x1].ravel()
    return _Bank(size, keys, pixels, valid, templates, (templates**2).sum(2), canvases)


def _full_alpha(canvases: dict, size: int, position: tuple[int, int], key) -> np.ndarray:
    """(S, S) alpha of template `key` placed in `position`: a window into the padded canvas."""
    shape, size_name, blur, dy, dx = key
    step = round(10 * size / 32)  # cells are 10 layout units apart
    oy, ox = (position[0] - 1) * step + dy, (position[1] - 1) * step + dx
    return canvases[shape, size_name, blur][size - oy : 2 * size - oy, size - ox : 2 * size - ox]


def _as_array(image: Any, size: int | None) -> np.ndarray:
    image = load_image(image)
    if size is not None:
        size = check_image_size(size)
        if image.size != (size, size):
            image = image.resize((size, size), Image.BILINEAR)
    width, height = image.size
    if width != height or width % 32:
        raise InputError(f"cannot parse a {width}x{height} image as a ShapeEdit scene; pass size=32 (or 64) to resize it")
    return np.asarray(image, dtype=np.float64)  # (H, W, 3)


def _fit(bank: _Bank, diffs: np.ndarray, directions: np.ndarray, contrast: np.ndarray) -> list[tuple[int, int] | None]:
    """Best (colour, template) per cell for `diffs` (9, P, 3) = pixels - background, or None (empty)."""
    scale2 = (bank.size // 32) ** 2
    empty = (diffs**2).sum((1, 2))  # (9,)
    # A cell can only hold an object if its energy could pass the presence test below; most cells
    # of a clean image are exactly empty, so this skips most of the work there.
    active = np.flatnonzero(empty >= 2.0 * scale2 * contrast.min())
    best: list[tuple[int, int] | None] = [None] * len(POSITIONS)
    if not len(active):
        return best
    # |d - a c|^2 summed over the cell = empty - 2 c.(sum_p a_p d_p) + |c|^2 |a|^2: correlate the
    # templates with the 3 RGB channels once, then every colour is a cheap dot product.
    correlations = bank.templates[active] @ diffs[active]  # (A, K, P) @ (A, P, 3) -> (A, K, 3)
    errors = empty[active, None, None] - 2.0 * (correlations @ directions.T).transpose(0, 2, 1) + contrast[None, :, None] * bank.energy[active, None, :]  # (A, C, K)
    for row, cell in enumerate(active):
        c, k = np.unravel_index(int(errors[row].argmin()), errors[row].shape)
        explained = empty[cell] - errors[row, c, k]
        # Present when the fit explains >= 2 full-contrast pixels' worth and most of the cell's energy.
        if explained >= 2.0 * scale2 * contrast[c] and explained >= 0.5 * empty[cell]:
            best[cell] = (int(c), int(k))
    return best


def parse_image(image: Any, size: int | None = None) -> ParsedScene:
    """Parse `image` (anything `load_image` reads; resized to `size` if given) into a `ParsedScene`."""
    array = _as_array(image, size)
    size = array.shape[0]
    scale = size // 32
    bank = _bank(size)

    # 1. Background: the most common nearest-palette colour; its observed median is the reference.
    flat = array.reshape(-1, 3)  # (HW, 3)
    nearest = ((_PALETTE**2).sum(1) - 2.0 * flat @ _PALETTE.T).argmin(1)  # (HW,) nearest palette colour
    bg_index = int(np.bincount(nearest, minlength=len(COLOR_NAMES)).argmax())
    background = np.median(flat[nearest == bg_index], axis=0)  # (3,)
    candidates = [i for i in range(len(COLOR_NAMES)) if i != bg_index]
    directions = _PALETTE[candidates] - background  # (C, 3)
    contrast = (directions**2).sum(1)  # (C,)
    diff = flat - background  # (HW, 3)

    # 2. Per cell, the least-squares best hypothesis (or empty). A second pass refits every cell
    #    after subtracting its neighbours' fitted renderings: a blurred neighbour spills into the
    #    cell's border and would otherwise pull the fit (a circle below a white square looks squarer).
    valid = bank.valid[..., None]  # (9, P, 1)
    fits = _fit(bank, diff[bank.pixels] * valid, directions, contrast)
    spills = any(fit is not None and (bank.keys[fit[1]][2] or bank.keys[fit[1]][3:] != (0, 0)) for fit in fits)
    if spills:  # sharp, centred objects stay inside their cells: the first pass is already exact
        contributions = _contributions(bank, fits, directions)  # (9, HW, 3)
        others = contributions.sum(0, keepdims=True) - contributions  # (9, HW, 3)
        cells_index = np.arange(len(POSITIONS))[:, None]
        corrected = (diff[bank.pixels] - others[cells_index, bank.pixels]) * valid  # (9, P, 3)
        fits = _fit(bank, corrected, directions, contrast)
    recon = diff - _contributions(bank, fits, directions).sum(0)  # (HW, 3) residual

    # 3. Measure what the re-rendered parse does not explain.
    residual = np.sqrt((recon**2).sum(-1)).reshape(size, size)  # (H, W)
    stray = residual > STRAY_DISTANCE
    cells = []
    for position, fit in zip(POSITIONS, fits):
        y0, y1, x0, x1 = cell_bounds(position, size)
        count = int(stray[y0:y1, x0:x1].sum())
        obj, blur, shift = None, 0.0, (0, 0)
        if fit is not None:
            shape, size_name, blur, dy, dx = bank.keys[fit[1]]
            obj, shift = Obj(shape, COLOR_NAMES[candidates[fit[0]]], size_name, position), (dy, dx)
        cells.append(CellFit(position, obj, count >= 3 * scale * scale, count, blur, shift))
    noise_rms = float(np.sqrt((residual**2).mean() / 3.0))
    blurs = [c.blur for c in cells if c.obj is not None]
    mean_blur = float(np.mean(blurs)) if blurs else 0.0
    stray_total = int(stray.sum())
    offset = float(np.linalg.norm(background - _PALETTE[bg_index]))  # an off-palette background is not clean
    pq = _quality(noise_rms, offset, mean_blur, stray_total, size)
    scene = Scene(COLOR_NAMES[bg_index], tuple(c.obj for c in cells if c.obj is not None))
    return ParsedScene(scene, tuple(cells), noise_rms, stray_total, mean_blur, pq)


def _contributions(bank: _Bank, fits: list, directions: np.ndarray) -> np.ndarray:
    """(9, HW, 3): each cell's fitted rendering minus the background, over the whole image."""
    out = np.zeros((len(POSITIONS), bank.size * bank.size, 3))
    for cell, (position, fit) in enumerate(zip(POSITIONS, fits)):
        if fit is not None:
            alpha = _full_alpha(bank.canvases, bank.size, position, bank.keys[fit[1]]).reshape(-1)  # (HW,)
            out[cell] = alpha[:, None] * directions[fit[0]]
    return out


def _quality(noise_rms: float, offset: float, mean_blur: float, stray: int, size: int) -> float:
    """PQ = clean colours x sharp edges x no speckle, each in [0, 1]; 1 for an exact rendering."""
    clean = _clip01(1.0 - max(0.0, noise_rms - 2.0) / 40.0) * _clip01(1.0 - max(0.0, offset - 8.0) / 60.0)  # sigma 8 noise -> ~0.85
    sharp = 1.0 - 0.25 * mean_blur / BLURS[-1]  # a 1-pixel blur -> ~0.83
    speckle = math.exp(-stray / (0.005 * size * size))  # 5 stray pixels at 32x32 -> 1/e
    return round(clean * sharp * speckle, 6)


def _clip01(value: float) -> float:
    return min(1.0, max(0.0, value))


def parse_scene(image: Any, size: int | None = None) -> Scene:
    """The scene shown in `image` (see `parse_image` for the clutter and quality details).

    >>> from refine.shapes.world import Obj, Scene, render
    >>> scene = Scene("black", (Obj("diamond", "yellow", "small", (0, 2)), Obj("square", "red", "large", (2, 0))))
    >>> parse_scene(render(scene, 64)) == scene
    True
    """
    return parse_image(image, size).scene


# ---------------------------------------------------------------------------------------------
# Scoring


@dataclass
class JudgeScore:
    """Scores of one edit, with a line of explanation per checked item in `breakdown`.

    `if_`, `cc`, `pq` in [0, 1]; `overall` = sqrt(IF * CC); `gedit_sc`, `gedit_pq`, `gedit_o` are
    the GEdit-Bench 0-10 scales (G_O = sqrt(G_SC * G_PQ)); `overall_10` = 10 * overall. `checks` holds the
    scored items of IF and CC (`Check`), from which `breakdown`'s lines are written.
    """

    if_: float
    cc: float
    pq: float
    breakdown: list[str] = field(default_factory=list)
    parsed: Scene | None = None
    checks: list["Check"] = field(default_factory=list)

    @property
    def overall(self) -> float:
        return math.sqrt(self.if_ * self.cc)

    @property
    def overall_10(self) -> float:
        return 10.0 * self.overall

    @property
    def gedit_sc(self) -> float:
        return 10.0 * self.if_

    @property
    def gedit_pq(self) -> float:
        return 10.0 * self.pq

    @property
    def gedit_o(self) -> float:
        return math.sqrt(self.gedit_sc * self.gedit_pq)

    @property
    def success(self) -> bool:
        """The instruction was fully followed (IF = 1)."""
        return self.if_ >= 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "if": self.if_,
            "cc": self.cc,
            "pq": self.pq,
            "overall": self.overall,
            "overall_10": self.overall_10,
            "gedit_sc": self.gedit_sc,
            "gedit_pq": self.gedit_pq,
            "gedit_o": self.gedit_o,
            "success": self.success,
            "breakdown": list(self.breakdown),
            "parsed": self.parsed.to_dict() if self.parsed is not None else None,
        }


def _name(obj: Obj) -> str:
    return f"{obj.size} {obj.color} {obj.shape}"


def _matches(got: Obj, want: Obj, attributes: Sequence[str]) -> int:
    return sum(getattr(got, a) == getattr(want, a) for a in attributes)


def _mark(credit: float) -> str:
    return "ok" if credit >= 1.0 else ("part" if credit > 0 else "FAIL")


@dataclass(frozen=True)
class Check:
    """One item the judge scored: a change the edit requires (`kind` "change") or something that must stay ("keep").

    `cell` is a cell's name or "background"; `expected` what should be there ("nothing" for an empty cell),
    `was` what the source had there, `found` what the parser read in the output (`CellFit.name`).
    """

    kind: str
    credit: float
    text: str
    cell: str
    was: str
    expected: str
    found: str

    @property
    def verdict(self) -> str:
        """"ok" (full credit), "part" or "fail" (none): the mark of its breakdown line, in lower case."""
        return _mark(self.credit).lower()


def _or_nothing(obj: Obj | None) -> str:
    return "nothing" if obj is None else _name(obj)


def _instruction_following(parsed: ParsedScene, before: Scene, after: Scene) -> tuple[float, list[str], list[Check]]:
    """IF from the changes `before` -> `after` requires (see the module docstring), with its checks."""
    items: list[Check] = []
    if before.background != after.background:
        credit = float(parsed.scene.background == after.background)
        text = f"background should become {after.background}: found {parsed.scene.background}"
        items.append(Check("change", credit, text, "background", before.background, after.background, parsed.scene.background))
    for position in POSITIONS:
        old, new = before.at(position), after.at(position)
        if old == new:
            continue
        fit, cell = parsed.cell(position), POSITION_NAMES[position]
        got = fit.obj
        if new is None:
            credit = float(got is None and not fit.clutter)
            text = f"the {cell} should be empty (the {_name(old)} leaves): found {fit.describe()}"
        else:
            if old is None:
                credit = 0.0 if got is None else (1 + _matches(got, new, ATTRIBUTES)) / (1 + len(ATTRIBUTES))
                want = f"a {_name(new)} should appear in the {cell}"
            else:
                changed = [a for a in ATTRIBUTES if getattr(old, a) != getattr(new, a)]
                credit = 0.0 if got is None else _matches(got, new, changed) / len(changed)
                want = f"the {_name(old)} in the {cell} should get {' and '.join(f'{a} {getattr(new, a)}' for a in changed)}"
            if fit.clutter:
                credit *= 0.5
            text = f"{want}: found {fit.describe()}"
        items.append(Check("change", credit, text, cell, _or_nothing(old), _or_nothing(new), fit.name))
    if not items:
        return 1.0, ["IF 1.00: the edit requires no change"], []
    score = sum(c.credit for c in items) / len(items)
    done = sum(c.credit >= 1.0 for c in items)
    lines = [f"IF {score:.2f}: {done} of {len(items)} required changes fully done"]
    return score, lines + [f"  [{_mark(c.credit)}] {c.text}" for c in items], items


def _consistency(parsed: ParsedScene, states: Sequence[Scene]) -> tuple[float, list[str], list[Check]]:
    """CC over what stays constant through all `states` (the source and target, or a whole sequence), with its checks."""
    items: list[Check] = []
    first = states[0]
    if all(s.background == first.background for s in states):
        credit = float(parsed.scene.background == first.background)
        text = f"background should stay {first.background}: found {parsed.scene.background}"
        items.append(Check("keep", credit, text, "background", first.background, first.background, parsed.scene.background))
    for position in POSITIONS:
        contents = [s.at(position) for s in states]
        fit, cell = parsed.cell(position), POSITION_NAMES[position]
        if all(c is None for c in contents):
            if fit.obj is not None or fit.clutter:
                items.append(Check("keep", 0.0, f"the {cell} should stay empty: found {fit.describe()}", cell, "nothing", "nothing",
                                   fit.name))
            continue
        if any(c is None for c in contents):
            continue  # the edit adds or removes here: instruction following judges this cell
        kept = [a for a in ATTRIBUTES if len({getattr(c, a) for c in contents}) == 1]
        if not kept:
            continue
        ref = contents[0]
        credit = 0.0 if fit.obj is None else _matches(fit.obj, ref, kept) / len(kept)
        if fit.clutter:
            credit *= 0.5
        what = f"the {_name(ref)} in the {cell}" if len(kept) == len(ATTRIBUTES) else f"the {' and '.join(kept)} of the {_name(ref)} in the {cell}"
        items.append(Check("keep", credit, f"{what} should stay: found {fit.describe()}", cell, _name(ref),
                           _name(contents[-1]), fit.name))
    if not items:
        return 1.0, ["CC 1.00: nothing had to stay the same"], []
    score = sum(c.credit for c in items) / len(items)
    kept_count = sum(c.credit >= 1.0 for c in items)
    lines = [f"CC {score:.2f}: {kept_count} of {len(items)} things that must not change are intact"]
    return score, lines + [f"  [{_mark(c.credit)}] {c.text}" for c in items], items


def _quality_line(parsed: ParsedScene) -> str:
    return (f"PQ {parsed.pq:.2f}: noise rms {parsed.noise_rms:.1f}/255, fitted blur {parsed.mean_blur:.1f} px, "
            f"{parsed.stray_pixels} stray pixels")


def _score(parsed: ParsedScene, states: Sequence[Scene], note: str | None = None) -> JudgeScore:
    if_, if_lines, if_checks = _instruction_following(parsed, states[-2], states[-1])
    cc, cc_lines, cc_checks = _consistency(parsed, states)
    lines = if_lines + cc_lines + [_quality_line(parsed)] + ([note] if note else [])
    return JudgeScore(if_, cc, parsed.pq, lines, parsed.scene, if_checks + cc_checks)


def _source_note(source_image: Any, case: ShapeCase) -> str | None:
    source = np.asarray(load_image(source_image))
    if source.shape == (case.size, case.size, 3) and np.array_equal(source, render_array(case.source, case.size)):
        return None
    seen = parse_image(source, case.size).scene
    if seen == case.source:
        return None
    return f"note: the source image shows {seen.describe()}, not the case's {case.source.describe()}; scored against the case"


def judge_edit(source_image: Any, output_image: Any, case: ShapeCase) -> JudgeScore:
    """Score `output_image` as the result of `case` (IF, CC, PQ, overall; see the module docstring).

    The expected change comes from the case's exact scenes; `source_image` is only checked against
    the case's source (a mismatch is noted in the breakdown).
    """
    parsed = parse_image(output_image, case.size)
    return _score(parsed, (case.source, case.target), _source_note(source_image, case))


def judge_meta(meta: dict[str, Any], output_image: Any) -> JudgeScore:
    """Score an output from an `EditRequest.meta` made by `ShapeCase.to_request` (rebuilds the case).

    >>> from refine.shapes.data import load_split
    >>> case = load_split("shapes-bench")[100]
    >>> judge_meta(case.to_request().meta, case.target_image).overall
    1.0
    """
    if not isinstance(meta, dict) or "shapes_case" not in meta:
        raise InputError("meta has no 'shapes_case'; build requests with ShapeCase.to_request() to judge them")
    case = ShapeCase.from_dict(meta["shapes_case"])
    return judge_edit(case.source_image, output_image, case)


@dataclass
class SequenceScore:
    """Multi-turn scores: per turn `turns[t]` (IF vs that turn), `cc_original[t]`, and `success_at_turn[t]`."""

    turns: list[JudgeScore]
    cc_original: list[float]
    success_at_turn: list[bool]
    breakdown: list[str] = field(default_factory=list)

    @property
    def if_(self) -> list[float]:
        return [t.if_ for t in self.turns]

    def to_dict(self) -> dict[str, Any]:
        return {
            "if": self.if_,
            "cc_original": list(self.cc_original),
            "success_at_turn": list(self.success_at_turn),
            "turns": [t.to_dict() for t in self.turns],
            "breakdown": list(self.breakdown),
        }


def judge_sequence(sequence: ShapeSequence, outputs: Sequence[Any], cc_threshold: float = 0.0) -> SequenceScore:
    """Score a multi-turn run: `outputs[t]` is the editor's image after turn t (fed its previous output).

    Turn t succeeds when IF_t = 1 and CC against the original >= `cc_threshold`; `success_at_turn[t]`
    is True when turns 1..t all succeeded (EdiVal's success rate at turn t, per sequence).

    >>> from refine.shapes.data import load_split
    >>> seq = load_split("shapes-mt")[0]
    >>> outputs = seq.target_images
    >>> outputs[2] = outputs[1]                          # the last turn did nothing
    >>> judge_sequence(seq, outputs).success_at_turn
    [True, True, False]
    """
    if len(outputs) != len(sequence):
        raise InputError(f"sequence {sequence.id!r} has {len(sequence)} turns but {len(outputs)} outputs were given; pass one image per turn")
    scenes = sequence.scenes
    turns, cc_original, success, lines = [], [], [], []
    previous: Any = sequence.source_image
    all_ok = True
    for t, (case, output) in enumerate(zip(sequence.cases, outputs)):
        parsed = parse_image(output, case.size)
        score = _score(parsed, (case.source, case.target), _source_note(previous, case))
        cc, _, _ = _consistency(parsed, scenes[: t + 2])
        all_ok = all_ok and score.if_ >= 1.0 and cc >= cc_threshold
        turns.append(score)
        cc_original.append(cc)
        success.append(all_ok)
        lines.append(f"turn {t + 1} ({case.instruction!r}): IF {score.if_:.2f}, CC vs original {cc:.2f}, "
                     f"{'all turns so far succeeded' if all_ok else 'sequence failed'}")
        previous = output
    return SequenceScore(turns, cc_original, success, lines)


def success_rates(scores: Sequence[SequenceScore]) -> list[float]:
    """Per turn t, the share of sequences whose turns 1..t all succeeded."""
    if not scores:
        return []
    turns = max(len(s.success_at_turn) for s in scores)
    return [sum(len(s.success_at_turn) > t and s.success_at_turn[t] for s in scores) / len(scores) for t in range(turns)]
