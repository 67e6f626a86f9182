"""A fake ShapeEdit editor with a known failure mode, for tests of refiners run through `refine compare`.

Example:
    >>> from refine.shapes.data import load_split
    >>> from refine.testing.shapes_fakes import DirectOnlyEditor
    >>> case = next(c for c in load_split("shapes-bench") if c.phrasing == "indirect")
    >>> from refine.types import EditRequest
    >>> asked = case.to_request()
    >>> direct = EditRequest(case.source_image, case.direct_instruction, meta=asked.meta)
    >>> [r.image == image for r, image in zip(DirectOnlyEditor().edit([asked, direct]), [case.source_image, case.target_image])]
    [True, True]

`DirectOnlyEditor` does a ShapeEdit case's edit only when told the case's canonical direct
phrasing (the caricature of a small editor that cannot resolve indirect references); told the
case's own instruction it changes nothing; anything else gives a noise picture. With
`direct_works=False` the direct phrasing gives noise too, so a rewrite only makes things worse
(what a best-scored selection must then undo).
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
from PIL import Image

from refine.shapes.data import ShapeCase
from refine.types import EditRequest, EditResult, Step


class DirectOnlyEditor:
    """See the module docstring; `calls` counts edited requests."""

    def __init__(self, direct_works: bool = True, name: str = "direct-only") -> None:
        self.direct_works = direct_works
        self.name = name
        self.calls = 0

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        out = []
        for request in requests:
            self.calls += 1
            case = ShapeCase.from_dict(request.meta["shapes_case"])
            if request.instruction == case.direct_instruction and self.direct_works:
                image = case.target_image
            elif request.instruction == case.instruction:
                image = case.source_image
            else:
                image = _noise(request.instruction, case.source_image.size)
            out.append(EditResult(image, request.instruction, [Step(kind="edit", source=self.name, instruction=request.instruction)]))
        return out


def _noise(text: str, size: tuple[int, int]) -> Image.Image:
    """A deterministic noise picture, a function of `text`."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)  # (H, W, 3)
    return Image.fromarray(pixels)


def direct_only_editor(direct_works: bool = True) -> DirectOnlyEditor:
    """Factory used as an editor kind: `{kind: refine.testing.shapes_fakes:direct_only_editor}`."""
    return DirectOnlyEditor(direct_works)
