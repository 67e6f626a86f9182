"""ShapeExpertThinker: ShapeEdit's programmatic expert, the oracle upper bound of the thinker loop.

Example:
    >>> from refine.shapes.data import load_split
    >>> from refine.thinker.protocol import ThinkRequest
    >>> from refine.thinker.shape_expert import ShapeExpertThinker
    >>> case = next(c for c in load_split("shapes-bench") if c.phrasing == "indirect" and c.category == "recolor")
    >>> request = case.to_request(seed=0)
    >>> ask = ThinkRequest(request.image, case.source_image, case.instruction, case.instruction, 1, request.meta)
    >>> [thought] = ShapeExpertThinker().think([ask])                  # the "edit" did nothing
    >>> thought.instruction == case.direct_instruction, thought.stop, thought.scores["semantic"]
    (True, False, 0.0)
    >>> done = ThinkRequest(request.image, case.target_image, case.instruction, thought.instruction, 2, request.meta)
    >>> ShapeExpertThinker().think([done])[0].stop
    True

It plays the role GPT-4.1 plays in the paper ("EditThinker-Expert"), with ground truth instead
of a model: every request must carry `meta["shapes_case"]` (`ShapeCase.to_request` puts it
there). For each edit it

1. critiques with the ShapeEdit judge (`refine.shapes.judge`): the judge's breakdown (which
   required changes are done, what was broken, the quality measurements) is the reasoning;
2. scores: semantic = 10 * sqrt(IF * CC) (the judge's overall: following the instruction
   *relative to the source*, so breaking other objects costs), quality = 10 * PQ;
3. says stop when the judge finds nothing left to fix (IF = 1 and CC = 1);
4. rewrites into the direct phrasing of what is still missing *from the image the next edit
   starts from*. The paper's loop re-edits the source (`edits_from="source"`): what is missing
   from the source is the whole edit, so the answer is the case's canonical direct instruction
   (asking only for the missing part would undo the part that was done). When the loop chains
   edits (`edit_from="current"`), the expert diffs the parsed current scene against the target
   (`remaining_edits`) and asks only for what is left (e.g. the move, when the recolor is done),
   at most two changes per instruction; if that cannot be phrased it falls back to the case's
   full direct instruction.

`critique="brief"` writes a short reasoning for training a small thinker: first what the request
asks in concrete terms (its direct phrasing), then at most three checks the judge failed, then the
decision. The full breakdown (`"full"`, the default) lists every check and the quality
measurements, 300 tokens at the median: a 4-layer, 5.7M-parameter ShapeEdit VLM fine-tuned on it
wrote the format but lost the instruction before the answer (0 of 24 rewrites right on
shapes-val at step 200, stop 36), since the answer comes after the whole critique.
"""

from __future__ import annotations

from itertools import permutations
from typing import Literal, Sequence

from refine.errors import InputError
from refine.thinker.protocol import ThinkRequest, Thought


class ShapeExpertThinker:
    """The ShapeEdit oracle thinker (see the module docstring).

    Args:
        max_changes: most edits one refined instruction may ask for (ShapeEdit instructions hold
            one edit or a two-part hybrid).
        critique: "full" (the judge's whole breakdown) or "brief" (the request made concrete, at most
            three failed checks, the decision; see the module docstring).
    """

    name = "shape-expert"
    reads_ground_truth = True  # the case's target and the benchmark's judge: an oracle (refine.oracle)

    def __init__(self, max_changes: int = 2, critique: Literal["full", "brief"] = "full") -> None:
        if max_changes not in (1, 2):
            raise InputError(f"max_changes={max_changes}; ShapeEdit instructions hold 1 edit or a 2-part hybrid")
        if critique not in ("full", "brief"):
            raise InputError(f"critique={critique!r}; use 'full' (the judge's breakdown) or 'brief'")
        self.max_changes = max_changes
        self.critique = critique

    def think(self, requests: Sequence[ThinkRequest]) -> list[Thought]:
        return [self._one(request) for request in requests]

    def _one(self, request: ThinkRequest) -> Thought:
        from refine.shapes.data import ShapeCase
        from refine.shapes.judge import judge_edit

        if "shapes_case" not in request.meta:
            raise InputError(
                "ShapeExpertThinker needs meta['shapes_case'] on every request (build them with ShapeCase.to_request()); "
                "for other data use a VLM thinker (--thinker vlm:SPEC)"
            )
        case = ShapeCase.from_dict(request.meta["shapes_case"])
        direct = case.direct_instruction
        if request.edited is None:  # think before edit: nothing to critique, rewrite to the direct phrasing
            return Thought(direct, f"rewrite {case.instruction!r} into its direct phrasing")
        score = judge_edit(request.source, request.edited, case)
        # Done means the judge finds nothing to fix: every required change made (IF = 1) and nothing
        # else disturbed (CC = 1). A parse equal to the target is not enough: clutter in a cell
        # parses as "empty" yet fails the judge.
        done = score.if_ >= 1.0 and score.cc >= 1.0
        if self.critique == "brief":
            failed = [line.strip() for line in score.breakdown if line.startswith("  [") and "[ok]" not in line]
            reasoning = "\n".join([f"the request: {direct}", *failed[:3]])
        else:
            reasoning = "\n".join(score.breakdown)
        if done:
            answer = request.previous_instruction
            reasoning += "\nthe edit matches the request: stop"
        elif request.edits_from == "current":
            answer, how = self._remaining(score.parsed, case.target, direct)
            reasoning += f"\n{how}"
        else:
            answer = direct
            reasoning += "\nthe next edit starts from the source again: ask for the whole edit in its direct phrasing"
        scores = {"semantic": round(score.overall_10, 4), "quality": round(score.gedit_pq, 4)}
        return Thought(answer, reasoning, scores, stop=done)

    def _remaining(self, current, target, fallback: str) -> tuple[str, str]:
        """The direct phrasing of what `current` still lacks to be `target`, and a line saying why."""
        edits = remaining_edits(current, target)
        phrased = phrase_edits(edits, current, self.max_changes)
        if phrased is None:
            return fallback, f"{len(edits)} remaining changes cannot be phrased from the current image: ask for the whole edit"
        text, _, used = phrased
        left = len(edits) - used
        return text, f"still missing: {text!r}" + (f" ({left} more change(s) left for later turns)" if left else "")


def remaining_edits(current, target) -> list:
    """ShapeEdit edits that turn scene `current` into `target` (unordered; empty when equal).

    Objects are matched cell by cell: a cell whose object is right is left alone; two cells whose
    objects must trade places give a `Swap`; an object that must go to an empty cell and exists
    identically in a cell that must change gives a `Move`; an object whose attributes differ gives
    one `Replace` / `Recolor` / `Resize` per attribute; what is left gives `Add` and `Remove`; a
    different background gives `Background`.

    Example:
        >>> from refine.shapes.world import Obj, Scene
        >>> now = Scene("white", (Obj("circle", "blue", "large", (0, 0)),))
        >>> want = Scene("white", (Obj("circle", "blue", "large", (2, 2)), Obj("square", "red", "small", (1, 1))))
        >>> sorted(type(e).__name__ for e in remaining_edits(now, want))
        ['Add', 'Move']
    """
    from refine.shapes.edits import Add, Background, Move, Recolor, Remove, Replace, Resize, Swap

    def key(obj):
        return (obj.shape, obj.color, obj.size)

    have = {o.position: o for o in current.objects}
    want = {o.position: o for o in target.objects}
    wrong = {p for p in have if want.get(p) != have[p]}  # cells whose current content must change
    missing = {p for p in want if have.get(p) != want[p]}  # cells whose target content is not there
    edits: list = []
    for p in sorted(missing):
        for q in sorted(missing):
            if p < q and p in have and q in have and p in wrong and q in wrong and key(have[p]) == key(want[q]) and key(have[q]) == key(want[p]):
                edits.append(Swap(p, q))
                missing -= {p, q}
                wrong -= {p, q}
    for p in sorted(missing):
        if p in have:
            continue
        sources = [q for q in sorted(wrong) if key(have[q]) == key(want[p])]
        sources.sort(key=lambda q: q in want)  # prefer an object whose cell must end up empty
        if sources:
            edits.append(Move(sources[0], p))
            missing.discard(p)
            wrong.discard(sources[0])
            if sources[0] in want:
                missing.add(sources[0])  # its cell still needs its own target content (added below)
    for p in sorted(missing):
        if p in have and p in wrong:
            old, new = have[p], want[p]
            if old.shape != new.shape:
                edits.append(Replace(p, new.shape))
            if old.color != new.color:
                edits.append(Recolor(p, new.color))
            if old.size != new.size:
                edits.append(Resize(p, new.size))
            wrong.discard(p)
        elif p not in have or p not in wrong:
            edits.append(Add(want[p]))
    edits.extend(Remove(p) for p in sorted(wrong) if p not in want)
    if current.background != target.background:
        edits.append(Background(target.background))
    return edits


def phrase_edits(edits: list, scene, max_changes: int = 2) -> tuple[str, object, int] | None:
    """(direct phrasing, edit, how many of `edits` it covers) for up to `max_changes` of `edits`.

    Tries two edits as one hybrid instruction first, then single edits, in every order, and
    keeps the first that `apply_edit` accepts (ShapeEdit refuses, e.g., a background colour an
    object still has). None when nothing applies.

    Example:
        >>> from refine.shapes.world import Obj, Scene
        >>> from refine.shapes.edits import Move, Recolor
        >>> scene = Scene("white", (Obj("circle", "red", "large", (0, 0)),))
        >>> phrase_edits([Recolor((0, 0), "blue")], scene)
        ('make the red circle blue', Recolor(position=(0, 0), color='blue'), 1)
    """
    from refine.shapes.edits import Hybrid, apply_edit
    from refine.shapes.instructions import direct_phrasing

    if not edits:
        return None
    candidates = []
    if max_changes >= 2 and len(edits) >= 2:
        candidates += [(Hybrid(a, b), 2) for a, b in permutations(edits, 2)]
    candidates += [(e, 1) for e in edits]
    for edit, count in candidates:
        try:
            apply_edit(scene, edit)
            return direct_phrasing(edit, scene), edit, count
        except InputError:
            continue
    return None
