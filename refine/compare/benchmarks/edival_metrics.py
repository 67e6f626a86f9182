"""EdiVal's detector-based metrics: instruction following by open-vocabulary detection plus rules, consistency by DINO.

Example (the rules are pure functions over detections: boxes are normalised ``[x1, y1, x2, y2]``):
    >>> from refine.compare.benchmarks.edival_metrics import Detections, parse_instruction, subject_add, turn_table
    >>> parse_instruction("subject_add", "Add [bench] on the [left] of [tree]")
    {'object': 'bench', 'position': 'left', 'reference': 'tree'}
    >>> bench = Detections([(0.1, 0.4, 0.3, 0.6)], [0.8])              # a bench on the left ...
    >>> tree = Detections([(0.5, 0.2, 0.9, 0.8)], [0.7])               # ... of the tree
    >>> subject_add(bench, tree, "left").passed, subject_add(bench, tree, "right").passed
    (True, False)
    >>> turn_table([[{"if": 100.0, "cc": 81.0}], [{"if": 0.0, "cc": 64.0}]])[0]["o"]   # sqrt(50 * 72.5)
    60.207972893961475

What follows EdiVal exactly (its public evaluation code, `detector/instruction_detector.py` and
`detector/consistency_detector.py` of TianyuCodings/EdiVal, read, not copied):

* the turn layout (multipass): instruction following IF_t compares the turn t-1 output (the input
  for t = 1) with the turn t output, using the last instruction of the CSV row with ``turns == t``;
  content consistency CC_t compares the input with the turn t output, only where that row's
  ``bg_consistency`` is true, over that row's ``unchanged_objects`` and ``all_objects``; every image
  is resized to 512x512 (LANCZOS) first;
* the rules per task type over Grounding DINO detections (prompt ``"name ."``, box and text
  thresholds 0.3; 0.35 with near-full-image boxes dropped for removal; 0.4 for the counts of a
  position change; 0.25 for the objects a background change keeps): `subject_add`,
  `subject_remove`, `subject_replace`, `position_change`, `count_change`, `background_kept`, with
  their margins (0.03 for add), IoU limits (removal: < 0.2; replacement: > 0; counting: boxes
  overlapping > 0.8 count once) and containment checks;
* where EdiVal asks a VLM instead (colour, material, text, background; the add and replace
  pre-checks), the VLM is asked with the images first and the answer passes when it contains
  "yes" (text: when it contains the new text); the judge backend is that VLM (EdiVal: Qwen2-VL-7B);
* object consistency: each unchanged object's box (detected in the input, threshold 0.35) cropped
  from both images, DINO similarity 0.5 x CLS cosine + 0.5 x patch cosine, pixel 1 - L1; no box
  found scores 0 (EdiVal's rule); background consistency: the boxes of every object, detected in
  both images, masked out, DINO patch similarity and pixel 1 - L1 over the rest.

Our reading (labelled as such in the report): EdiVal's VLM prompts are read from the user's
checkout when `judge.prompts` is given, else refine words the same questions; the detector is
transformers' `GroundingDinoForObjectDetection` (EdiVal runs the original SwinT-OGC code;
IDEA-Research/grounding-dino-tiny is its port); features default to DINOv2 (EdiVal uses DINOv3
ViT-B/16, which the `features` key accepts); the DINO terms come from the rewards layer's
`ConsistencyReward` (patch term: mean of per-patch cosines where EdiVal takes the cosine of pooled
patches; for the background, the output's boxes are filled from the input before the forward pass
and the patches touching a box are left out, where EdiVal pools the patches at least half
background of the two untouched images); object names are not shortened
by a VLM before the position-change counts; EdiVal's special cases for "hat" and "bird" removals
are left out. CC_t = 100 x the mean of the object and background DINO similarities (the two that
exist); IF_t is 0 or 100; per turn O_t = sqrt(IF_t x CC_t) over the benchmark's means at turn t
(`turn_table`, which the report adds per entry). A case's `overall` (sqrt of its mean IF and mean
CC over turns) is refine's per-case summary for intervals and paired deltas, not an EdiVal number.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw
from pydantic import Field

from refine.config import RefineConfig
from refine.errors import InputError

Box = tuple[float, float, float, float]  # normalised x1, y1, x2, y2

POSITIONS = ("left", "right", "above", "below")
IMAGE_SIZE = 512  # EdiVal resizes every image to 512x512 before scoring
THRESHOLD = 0.3  # box and text threshold of EdiVal's single-object detections
REMOVE_THRESHOLD = 0.35
POSITION_COUNT_THRESHOLD = 0.4
KEEP_THRESHOLD = 0.25  # objects a background change must keep
OBJECTS_THRESHOLD = 0.35  # the multi-object detections of consistency
ADD_MARGIN = 0.03  # a new object must be this far (normalised centre) beyond its reference
REMOVE_MAX_IOU = 0.2  # a remaining detection overlapping less than this is another object
COUNT_IOU = 0.8  # boxes overlapping more than this count once

# The bracketed format of the CSV's `format_instructions` column, one pattern per task type (EdiVal's templates).
FORMATS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "subject_add": (
        (r"Add \[([^\]]+)\] on the \[([^\]]+)\] of \[([^\]]+)\]", ("object", "position", "reference")),
        (r"Add \[([^\]]+)\]", ("object",)),
    ),
    "subject_remove": ((r"Remove \[([^\]]+)\]", ("object",)),),
    "subject_replace": ((r"Replace \[([^\]]+)\] with \[([^\]]+)\]", ("object", "new")),),
    "color_alter": ((r"Change the color of \[([^\]]+)\] to \[([^\]]+)\]", ("object", "color")),),
    "material_alter": ((r"Change the material of \[([^\]]+)\] to \[([^\]]+)\]", ("object", "material")),),
    "text_change": (
        (r"Replace the text '\[([^\]]+)\]' on \[([^\]]+)\] with '\[([^\]]+)\]'", ("old_text", "object", "text")),
        (r"Add text '\[([^\]]+)\]' on the image", ("text",)),
    ),
    "position_change": ((r"Change the position of \[([^\]]+)\] to \[([^\]]+)\] of \[([^\]]+)\]", ("object", "position", "reference")),),
    "count_change": ((r"Change the count of \[([^\]]+)\] to \[([^\]]+)\]", ("object", "count")),),
    # EdiVal reads background changes from the plain instruction, which names the objects to keep
    "background_change": (
        (r"Change the background to ([^,]+), remain the (.+) unchanged", ("background", "keep")),
        (r"Change the background to \[([^\]]+)\]", ("background",)),
    ),
}

# The VLM questions of EdiVal's checks, by EdiVal's constant name (read from `detector/instruction_detector.py` of a
# checkout when `judge.prompts` is given); the values are refine's own wording with the same placeholders.
VLM_FILE = "detector/instruction_detector.py"
VLM_QUESTIONS = {
    "VLM_DD_ADD_OBJECT_PROMPT": "Image 1 is the original and image 2 the edited version. Does a {object_name} appear in "
    "image 2 that was not in image 1? Answer YES or NO; answer NO when unsure.",
    "VLM_DD_REPLACE_PROMPT": "Image 1 is the original and image 2 the edited version. Has the {object_name} been replaced "
    "by a {new_object} in image 2? Answer YES or NO.",
    "VLM_DD_COLOR_ALTER_PROMPT": 'Image 1 is the original and image 2 the edited version. Does image 2 carry out the edit '
    '"{instruction}" correctly and completely, with a natural result? Answer Yes or No.',
    "VLM_DD_MATERIAL_ALTER_PROMPT": 'Image 1 is the original and image 2 the edited version. Does image 2 carry out the '
    'edit "{instruction}" correctly and completely, with a natural result? Answer Yes or No.',
    "VLM_TEXT_PROMPT": "Write out the text visible in this image, and nothing else.",
    "VLM_BACKGROUND_PROMPT": "Does the background of this image show [{background}]? Answer YES or NO.",
}


class DetectorSpec(RefineConfig):
    """The `detector` of the edival benchmark under `judge.scheme: official`: the models of EdiVal's metrics."""

    model: str = Field(
        "IDEA-Research/grounding-dino-tiny",
        description="Grounding DINO checkpoint (folder or hub id) for transformers' GroundingDinoForObjectDetection "
        "(EdiVal runs SwinT-OGC, which grounding-dino-tiny ports).",
    )
    features: str = Field(
        "facebook/dinov2-base",
        description="DINO-family checkpoint for the consistency features (EdiVal: facebook/dinov3-vitb16-pretrain-lvd1689m).",
    )
    device: str = Field("cpu", description="Where both models run (cuda, cuda:1, cpu).")
    dtype: str = Field("float32", description="torch dtype name of both models.")
    batch_size: int = Field(8, ge=1, description="Images per forward pass.")
    image_size: int = Field(IMAGE_SIZE, ge=8, description="Every image is resized to this square first (EdiVal: 512).")


@dataclass(frozen=True)
class Detections:
    """One detector answer for one phrase in one image: normalised boxes, their scores and labels."""

    boxes: Sequence[Box] = ()
    scores: Sequence[float] = ()
    labels: Sequence[str] = ()

    def __len__(self) -> int:
        return len(self.boxes)

    def top(self) -> Box | None:
        """The highest-scoring box, or None."""
        return None if not self.boxes else self.boxes[int(np.argmax(self.scores))]

    def centers(self) -> list[tuple[float, float]]:
        return [center(b) for b in self.boxes]


@dataclass(frozen=True)
class Verdict:
    """A rule's decision and why (kept in the case details)."""

    passed: bool
    reason: str


def parse_instruction(task_type: str, text: str) -> dict[str, str] | None:
    """The bracketed fields of a formatted instruction (``keep`` of a background change is comma-separated), or None."""
    for pattern, names in FORMATS.get(task_type, ()):
        match = re.search(pattern, text)
        if match:
            return {name: value.strip() for name, value in zip(names, match.groups())}
    return None


def center(box: Box) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes (0 when the union is empty).

    >>> box_iou((0, 0, 2, 2), (1, 0, 3, 2))
    0.3333333333333333
    """
    width, height = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    inter = width * height if width > 0 and height > 0 else 0.0
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def contains(outer: Box, inner: Box) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and outer[2] >= inner[2] and outer[3] >= inner[3]


def count_objects(boxes: Sequence[Box], iou: float = COUNT_IOU) -> int:
    """How many objects `boxes` show: a box overlapping a kept one by more than `iou` is the same object.

    >>> count_objects([(0, 0, 1, 1), (0, 0, 1, 0.95), (2, 2, 3, 3)])
    2
    """
    kept: list[Box] = []
    for box in boxes:
        if all(box_iou(box, other) <= iou for other in kept):
            kept.append(box)
    return len(kept)


def is_beyond(target: tuple[float, float], reference: tuple[float, float], position: str, margin: float = 0.0) -> bool:
    """Whether centre `target` lies `position` of `reference` (image y grows downwards) by more than `margin`."""
    dx, dy = target[0] - reference[0], target[1] - reference[1]
    return {"left": -dx, "right": dx, "above": -dy, "below": dy}.get(position, -math.inf) > margin


# -- rules per task type (pure functions over detections) -------------------------------------------------------


def subject_add(new: Detections, reference: Detections | None = None, position: str | None = None, margin: float = ADD_MARGIN) -> Verdict:
    """`new` (in the output) detected; with a reference (in the turn's input), some pair must be `position` of it."""
    if reference is None or position is None:
        return Verdict(len(new) > 0, f"{len(new)} instance(s) of the new object detected")
    if not len(new) or not len(reference):
        return Verdict(False, f"detected: new object {len(new)}, reference {len(reference)}")
    if position not in POSITIONS:
        return Verdict(False, f"unknown position {position!r}")
    ok = any(is_beyond(t, r, position, margin) for r in reference.centers() for t in new.centers())
    return Verdict(ok, f"a new object {'is' if ok else 'is not'} {position} of a reference one")


def subject_remove(source: Detections, target: Detections, max_iou: float = REMOVE_MAX_IOU) -> Verdict:
    """The object found in the input (top box) is gone from the output: no detection, or the top one elsewhere."""
    if source.top() is None:
        return Verdict(False, "the object is not detected in the input")
    if target.top() is None:
        return Verdict(True, "the object is no longer detected")
    overlap = box_iou(source.top(), target.top())
    return Verdict(overlap < max_iou, f"IoU of the input and output detections {overlap:.3f} (removed below {max_iou})")


def subject_replace(old: Detections, new: Detections) -> Verdict:
    """The old object (input) and the new one (output) are both found and some pair of their boxes overlaps."""
    if not len(old) or not len(new):
        return Verdict(False, f"detected: old object {len(old)}, new object {len(new)}")
    best = max(box_iou(a, b) for a in old.boxes for b in new.boxes)
    return Verdict(best > 0.0, f"best IoU between old and new boxes {best:.3f}")


def position_change(
    source_reference: Detections, source_object: Detections, target_reference: Detections, target_object: Detections,
    top_reference: Box | None, top_object: Box | None, position: str,
) -> Verdict:
    """Counts of both objects unchanged; in the output the object's top box is `position` of the reference's.

    The four `Detections` are at the counting threshold (0.4); the top boxes come from the output at
    the default one. A box containing the other is taken as a detector confusion, not a move.
    """
    for name, before, after in (("reference", source_reference, target_reference), ("object", source_object, target_object)):
        counts = count_objects(before.boxes), count_objects(after.boxes)
        if counts[0] != counts[1]:
            return Verdict(False, f"count of the {name} changed from {counts[0]} to {counts[1]}")
    if top_reference is None or top_object is None:
        return Verdict(False, "object or reference not detected in the output")
    if contains(top_reference, top_object) or contains(top_object, top_reference):
        return Verdict(False, "one box contains the other")
    ok = is_beyond(center(top_object), center(top_reference), position)
    return Verdict(ok, f"the object {'is' if ok else 'is not'} {position} of the reference")


def count_change(source: Detections, target: Detections, count: str | int) -> Verdict:
    """The object is found in the input and the output holds exactly `count` of it (overlaps counted once)."""
    try:
        wanted = int(count)
    except ValueError:
        return Verdict(False, f"count {count!r} is not an integer")
    if not len(source) or not len(target):
        return Verdict(False, f"detected: input {len(source)}, output {len(target)}")
    found = count_objects(target.boxes)
    return Verdict(found == wanted, f"{found} counted, {wanted} asked")


def background_kept(kept: Sequence[Detections]) -> Verdict:
    """Every object a background change keeps is found in the output, and not as a box covering the image."""
    for i, detections in enumerate(kept):
        box = detections.top()
        if box is None:
            return Verdict(False, f"kept object {i + 1} not detected in the output")
        if box[2] - box[0] > 0.9 and box[3] - box[1] > 0.9:
            return Verdict(False, f"kept object {i + 1} detected as the whole image")
    return Verdict(True, "the kept objects are still there")


def says_yes(answer: str | None) -> bool:
    """EdiVal's reading of a VLM yes/no answer: it contains "yes" (case-insensitive)."""
    return "yes" in (answer or "").lower()


def singular(name: str) -> str:
    """EdiVal's plural stripping for replacements: a final "es", else a final "s", is removed."""
    return name[:-2] if name.endswith("es") else name[:-1] if name.endswith("s") else name


def turn_table(cases: Sequence[Sequence[dict[str, float | None]]]) -> list[dict[str, float | None]]:
    """EdiVal's per-turn table from each case's turn scores: IF_t, CC_t (means over the cases that have one), O_t = sqrt(IF_t x CC_t)."""
    turns = max((len(c) for c in cases), default=0)
    table = []
    for t in range(turns):
        row: dict[str, float | None] = {}
        for name in ("if", "cc"):
            values = [c[t][name] for c in cases if len(c) > t and c[t].get(name) is not None]
            row[name] = float(np.mean(values)) if values else None
        row["o"] = None if row["if"] is None or row["cc"] is None else math.sqrt(row["if"] * row["cc"])
        row["n"] = sum(1 for c in cases if len(c) > t)
        table.append(row)
    return table


def run_turn_table(run_dir: str | Path, entry: str) -> list[dict[str, float | None]]:
    """`turn_table` of one entry of a finished `refine compare` run (read from its ``cases.jsonl``)."""
    path = Path(run_dir) / "cases.jsonl"
    if not path.is_file():
        raise InputError(f"no cases.jsonl in {str(run_dir)!r}; give the results folder of a refine compare run")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    chosen = [row["turn_scores"] for row in rows if row.get("entry") == entry and row.get("turn_scores")]
    if not chosen:
        entries = sorted({str(row.get("entry")) for row in rows})
        raise InputError(f"{path} has no per-turn scores for entry {entry!r}; entries: {', '.join(entries)}")
    return turn_table(chosen)


EDIVAL_MODELS = {"features": "dinov3-vitb16", "vlm": "Qwen2-VL-7B-Instruct"}  # what EdiVal runs


def metrics_label(spec: DetectorSpec, vlm: str | None, prompts_read: bool) -> str:
    """The report label of EdiVal's metrics: the models used, where they differ from EdiVal's, whose VLM wording.

    >>> metrics_label(DetectorSpec(), "Qwen2-VL-7B-Instruct", prompts_read=True)
    "official-metrics (detector grounding-dino-tiny; features dinov2-base, not EdiVal's dinov3-vitb16; VLM Qwen2-VL-7B-Instruct, EdiVal's VLM prompts)"
    """
    def short(name: str | None) -> str:
        return str(name).rstrip("/").split("/")[-1] if name else "unnamed"

    parts = [f"detector {short(spec.model)}"]  # always a Grounding DINO (the class loaded), as EdiVal's
    parts.append(f"features {short(spec.features)}")
    if EDIVAL_MODELS["features"] not in short(spec.features):
        parts[-1] += f", not EdiVal's {EDIVAL_MODELS['features']}"
    parts.append(f"VLM {short(vlm)}")
    if EDIVAL_MODELS["vlm"] not in short(vlm):
        parts[-1] += f", not EdiVal's {EDIVAL_MODELS['vlm']}"
    parts[-1] += ", EdiVal's VLM prompts" if prompts_read else ", refine's wording of EdiVal's VLM questions"
    return f"official-metrics ({'; '.join(parts)})"


# -- image helpers ----------------------------------------------------------------------------------------------


def resized(image: Image.Image, size: int = IMAGE_SIZE) -> Image.Image:
    image = image.convert("RGB")
    return image if image.size == (size, size) else image.resize((size, size), Image.LANCZOS)


def crop(image: Image.Image, box: Box) -> Image.Image | None:
    """The pixels of a normalised box (None when it is under 2 pixels wide or high)."""
    w, h = image.size
    x1, y1 = max(0, min(w, int(box[0] * w))), max(0, min(h, int(box[1] * h)))
    x2, y2 = max(0, min(w, int(box[2] * w))), max(0, min(h, int(box[3] * h)))
    return image.crop((x1, y1, x2, y2)) if x2 - x1 >= 2 and y2 - y1 >= 2 else None


def boxes_mask(size: tuple[int, int], boxes: Sequence[Box]) -> Image.Image:
    """An "L" mask, 255 inside the boxes (the objects: where change is allowed), 0 on the background."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    w, h = size
    for box in boxes:
        draw.rectangle([int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)], fill=255)
    return mask


def fill(question: str, **fields: str) -> str:
    """`question` with ``{name}`` placeholders filled (other braces are left alone)."""
    for name, value in fields.items():
        question = question.replace("{" + name + "}", value)
    return question


def detection_prompt(names: Sequence[str]) -> str:
    """Grounding DINO's text prompt for `names`: lower case, periods removed, each ended by " ."."""
    return " ".join(n.strip().lower().replace(".", "") + " ." for n in names)


__all__ = [
    "DetectorSpec", "Detections", "FORMATS", "POSITIONS", "VLM_QUESTIONS", "Verdict", "background_kept", "box_iou", "contains",
    "count_change", "count_objects", "metrics_label", "parse_instruction", "position_change", "run_turn_table", "says_yes", "singular", "subject_add",
    "subject_remove", "subject_replace", "turn_table",
]

