"""Outputs of known quality for a ShapeEdit case, and an editor that returns them (cheap data for judges and thinkers).

Example:
    >>> import random
    >>> from refine.shapes.data import stream_case
    >>> from refine.shapes.candidates import CandidateEditor, candidate_outputs
    >>> case = stream_case(41, 0)
    >>> [name for name, _ in candidate_outputs(case, random.Random(3), near_misses=True, k=4)]
    ['source', 'collateral', 'target_degraded', 'target_degraded']
    >>> results = CandidateEditor().edit([case.to_request(seed=seed) for seed in range(4)])
    >>> results[0].image.size, [result.meta["candidate"] for result in results]
    ((32, 32), ['target', 'target', 'same_category', 'source'])

`candidate_outputs` spreads the exact judge's O over [0, 1]: the target (clean or degraded), the
unchanged source, a wrong edit, noise and, with `near_misses`, outputs one cell away from the target.
The ShapeEdit VLM's judge examples are built on them (`refine.shapes.vlm.tasks`).

`CandidateEditor` is an `Editor` that answers each request with one of them, drawn by the request's
seed. It ignores the instruction, so it is no model of an editor's behaviour, only of its failures:
with it, `refine thinker data` (`factory: refine.shapes.candidates:CandidateEditor`) gives the
expert as many critiques and rewrites as wanted at the cost of rendering (thousands of trajectories
a minute, against ~300 a minute for the bundled editor at 8 steps on one core): the scale a small
thinker needs to learn the rewrite in its own format (issue 24, benchmarks/RESULTS.md).
"""

from __future__ import annotations

import random
from typing import Sequence

from PIL import Image

from refine.errors import InputError
from refine.shapes.data import ShapeCase
from refine.shapes.degrade import degrade, noise_image
from refine.shapes.edits import Hybrid, apply_edit, random_edit
from refine.shapes.world import render
from refine.types import EditRequest, EditResult


def candidate_outputs(case: ShapeCase, rng: random.Random, near_misses: bool = False, k: int = 2) -> list[tuple[str, Image.Image]]:
    """`k` outputs to judge besides an editor's: the target (clean or degraded), the source, a wrong edit, noise.

    They spread the exact judge's O over [0, 1] so the score labels are not all one value. With
    `near_misses`, also outputs that differ from the target in one cell, as an editor's failures do:
    an edit of the case's own category with other arguments (wrong colour, cell, shape...), the
    right edit plus an unwanted change elsewhere, and for a hybrid edit only its first half. Their
    prompt is the case's own, so only the image tells them apart from the target.
    """
    target = case.target_image
    wrong = apply_edit(case.source, random_edit(case.source, rng))
    kinds = [
        ("target", target),
        ("target_degraded", degrade(target, noise=rng.uniform(2, 16) / 255, blur=rng.choice((0.6, 1.0, 1.5)), seed=rng.randrange(1 << 30))),
        ("source", case.source_image),
        ("wrong_edit", render(wrong, case.size)),
        ("noise", noise_image(case.size, seed=rng.randrange(1 << 30))),
    ]
    weights = [3, 3, 2, 3, 1]
    if near_misses:
        misses = [("same_category", _same_category_miss(case, rng)), ("collateral", _collateral(case, rng))]
        if isinstance(case.edit, Hybrid):
            misses.append(("half_edit", render(apply_edit(case.source, case.edit.first), case.size)))
        kinds += [(name, image) for name, image in misses if image is not None]
        weights += [4] * (len(kinds) - len(weights))
    return rng.choices(kinds, weights=weights, k=k)


def _same_category_miss(case: ShapeCase, rng: random.Random) -> Image.Image | None:
    """The source edited by another edit of the case's category (the editor did the right kind of thing wrongly)."""
    if isinstance(case.edit, Hybrid):
        return None
    try:
        edit = random_edit(case.source, rng, category=case.category)
    except InputError:  # no other edit of this category fits the scene
        return None
    return render(apply_edit(case.source, edit), case.size)


def _collateral(case: ShapeCase, rng: random.Random) -> Image.Image | None:
    """The target with one more random edit (the edit is done, but something else changed too)."""
    try:
        return render(apply_edit(case.target, random_edit(case.target, rng)), case.size)
    except InputError:
        return None


class CandidateEditor:
    """An `Editor` that returns `candidate_outputs(case, Random(request.seed), near_misses)` for each request.

    Every request must carry `meta["shapes_case"]` (`ShapeCase.to_request` puts it there).
    """

    name = "candidates"

    def __init__(self, near_misses: bool = True) -> None:
        self.near_misses = near_misses

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        results = []
        for request in requests:
            if "shapes_case" not in request.meta:
                raise InputError("CandidateEditor needs meta['shapes_case'] on every request (build them with ShapeCase.to_request())")
            case = ShapeCase.from_dict(request.meta["shapes_case"])
            seed = 0 if request.seed is None else request.seed  # an unseeded request draws as seed 0: repeatable
            [(kind, image)] = candidate_outputs(case, random.Random(seed), self.near_misses, k=1)
            results.append(EditResult(image, request.instruction, meta={"candidate": kind}))
        return results
