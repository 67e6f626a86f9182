"""Thinker trajectories as the data pipeline sees them: edits, the scorer's scores, the expert's critiques.

Example:
    >>> from refine.thinker.trajectories import Critique, Trajectory, TrajectoryStep
    >>> steps = [TrajectoryStep(1, "paint it like the sky", "turn_1.png", {"semantic": 2.0, "quality": 9.0},
    ...                         Critique("still red", "make the red circle blue", stop=False)),
    ...          TrajectoryStep(2, "make the red circle blue", "turn_2.png", {"semantic": 10.0, "quality": 9.0},
    ...                         Critique("done", "make the red circle blue", stop=True))]
    >>> trajectory = Trajectory("t0", "source.png", "paint it like the sky", "recolor", steps)
    >>> trajectory.scores(), trajectory.stopped
    ([2.0, 10.0], True)

Indexing (the paper's Sec. 4, with edits counted from 1): edit k is image I_k, made by
instruction P_k (P_1 = T_s, the user's instruction, unless the loop thought before editing);
S_k is the scorer's score of I_k; the expert's critique of I_k holds its reasoning R, its stop
flag and its refined instruction, which the loop executed as P_{k+1}. The critique of I_k is
the paper's step k+1 sample: input (I_src, I_k, T_s, P_k), output (R, S_k, P_{k+1}).

`load_trajectories(root)` reads a `TraceWriter` folder (`refine.thinker.traces`);
`fill_scores(trajectories, scorer)` puts the scorer's scores on every edit (the expert outputs
none, paper Sec. 4.2). `ShapesJudgeScorer` is ShapeEdit's exact judge: it reads the ground truth
(an oracle), which is what a data pipeline's scorer is for; the learned thinker never sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, Sequence

from PIL import Image

from refine.errors import ArtifactError, InputError
from refine.thinker.traces import read_requests, read_turns

# An image is held as a PIL image or as a path relative to the trajectory's `root`.
ImageRef = Any


@dataclass(frozen=True)
class Critique:
    """The expert's critique of one edit: reasoning R, its refined instruction, its stop flag."""

    reasoning: str
    answer: str | None
    stop: bool | None = None


@dataclass(frozen=True)
class TrajectoryStep:
    """Edit k of a trajectory: the instruction that made it, the image, its scores, its critique.

    `scores` are the scorer's ("semantic", "quality", 0-10) of `image`; `{}` until `fill_scores`.
    `critique` is None when the edit was not critiqued or the thinker's reply was unusable.
    """

    turn: int
    instruction: str
    image: ImageRef
    scores: dict[str, float] = field(default_factory=dict)
    critique: Critique | None = None
    seed: int | None = None

    @property
    def semantic(self) -> float:
        """S_k, the score the filter reads (the semantic score; see `refine.thinker.filters`)."""
        if "semantic" not in self.scores:
            raise InputError(f"edit {self.turn} has no semantic score; run fill_scores(trajectories, scorer) first")
        return float(self.scores["semantic"])


@dataclass(frozen=True)
class Trajectory:
    """One request's run of the loop: source, user instruction T_s, task type, its edits in order."""

    id: str
    source: ImageRef
    instruction: str
    task: str
    steps: tuple[TrajectoryStep, ...] | list[TrajectoryStep]
    editor: str = ""
    seed: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    stop_reason: str | None = None
    root: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))

    def scores(self) -> list[float]:
        """[S_1, ..., S_n], the semantic scores of the edits in order."""
        return [step.semantic for step in self.steps]

    @property
    def stopped(self) -> bool:
        """Whether the expert said stop on the last edit."""
        last = self.steps[-1].critique if self.steps else None
        return bool(last is not None and last.stop)

    def with_steps(self, steps: Sequence[TrajectoryStep]) -> "Trajectory":
        return replace(self, steps=tuple(steps))

    def image(self, ref: ImageRef) -> Image.Image:
        """`ref` (the source or an edit) as an RGB PIL image."""
        if isinstance(ref, Image.Image):
            return ref.convert("RGB")
        path = Path(self.root or ".") / str(ref)
        if not path.is_file():
            raise ArtifactError(f"{path}: image of trajectory {self.id} is missing; the trace folder is incomplete")
        with Image.open(path) as image:
            return image.convert("RGB")


class Scorer(Protocol):
    """Scores edits: {"semantic", "quality"} on 0-10 for each (source, edit, instruction, meta)."""

    name: str

    def score(self, items: Sequence[tuple[Image.Image, Image.Image, str, dict[str, Any]]]) -> list[dict[str, float]]: ...


class ShapesJudgeScorer:
    """ShapeEdit's exact judge as the pipeline's scorer (an oracle: it reads the case's target).

    Semantic = 10 * sqrt(IF * CC), quality = 10 * PQ: the scales `ShapeExpertThinker` reports, so
    a learned thinker's score means what the oracle's did. Needs `meta["shapes_case"]`.

    Example:
        >>> from refine.shapes.data import load_split
        >>> case = load_split("shapes-val")[0]
        >>> [scores] = ShapesJudgeScorer().score([(case.source_image, case.target_image, case.instruction, case.to_request().meta)])
        >>> scores["semantic"]
        10.0
    """

    name = "shapes-judge"
    reads_ground_truth = True

    def score(self, items: Sequence[tuple[Image.Image, Image.Image, str, dict[str, Any]]]) -> list[dict[str, float]]:
        from refine.shapes.judge import judge_meta

        out = []
        for _source, edited, _instruction, meta in items:
            judged = judge_meta(meta, edited)
            out.append({"semantic": round(judged.overall_10, 4), "quality": round(judged.gedit_pq, 4)})
        return out


def fill_scores(trajectories: Sequence[Trajectory], scorer: Scorer) -> list[Trajectory]:
    """Every trajectory with the scorer's scores on every edit (the thinker's own scores are not used).

    Example:
        >>> class Brightness:
        ...     name = "bright"
        ...     def score(self, items):
        ...         return [{"semantic": edited.getpixel((0, 0))[0] / 25.5, "quality": 10.0} for _, edited, _, _ in items]
        >>> red = Image.new("RGB", (4, 4), "red")
        >>> raw = Trajectory("t", red, "make it red", "recolor", [TrajectoryStep(1, "make it red", red)])
        >>> fill_scores([raw], Brightness())[0].scores()
        [10.0]
    """
    filled = []
    for trajectory in trajectories:
        source = trajectory.image(trajectory.source)
        items = [(source, trajectory.image(step.image), trajectory.instruction, trajectory.meta) for step in trajectory.steps]
        scores = scorer.score(items) if items else []
        steps = [replace(step, scores=dict(s)) for step, s in zip(trajectory.steps, scores)]
        filled.append(trajectory.with_steps(steps))
    return filled


def load_trajectories(root: str | Path, editor: str = "") -> list[Trajectory]:
    """The trajectories of a `TraceWriter` folder (think-before-edit turns are skipped: no edit yet).

    A trajectory's task is `meta["category"]` (ShapeEdit cases put it there; "unknown" otherwise).
    """
    root = Path(root)
    requests = {r["request_id"]: r for r in read_requests(root)}
    by_request: dict[str, list] = {}
    for record in read_turns(root):
        by_request.setdefault(record.request_id, []).append(record)
    trajectories = []
    for rid, records in by_request.items():
        request = requests.get(rid)
        if request is None:  # an interrupted request: its records were never finished
            continue
        records = sorted((r for r in records if r.turn >= 1 and r.edited_image), key=lambda r: r.turn)
        steps = [TrajectoryStep(r.turn, r.previous_instruction, r.edited_image, {}, _critique(r), r.seed) for r in records]
        meta = request.get("meta") or {}
        trajectories.append(
            Trajectory(
                id=f"{editor}/{rid}" if editor else rid,
                source=request["source_image"],
                instruction=request["instruction"],
                task=str(meta.get("category", "unknown")),
                steps=steps,
                editor=editor,
                seed=request.get("seed"),
                meta=meta,
                stop_reason=request.get("stop_reason"),
                root=str(root),
            )
        )
    return trajectories


def _critique(record) -> Critique | None:
    output = record.output
    if output is None or not record.ok:
        return None
    answer = output.get("instruction")
    if output.get("stop") and not answer:
        answer = record.previous_instruction  # a bare stop keeps the instruction that made the edit
    return Critique(output.get("reasoning") or "", answer, output.get("stop"))
