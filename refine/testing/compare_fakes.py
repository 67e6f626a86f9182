"""A toy benchmark, editor and refiner for testing comparison machinery in milliseconds.

Example:
    >>> from refine.compare import run_compare
    >>> from refine.testing.compare_fakes import toy_config
    >>> import tempfile
    >>> run = run_compare(toy_config(tempfile.mkdtemp(), cases=4), write_report=False)
    >>> {row.entry: round(row.metrics["overall"].mean, 2) for row in run.summary if row.category == "all"}
    {'base': 0.5, '+spell': 1.0}

The toy world: a grey 16x16 image with a coloured 8x8 square; the instruction asks for another
colour, said directly ("make the square blue") or indirectly ("make the square the colour of the
sky"). `PaintEditor` paints the square when it can read a colour name in the instruction and
otherwise returns the image unchanged; `SpellOut` is a black-box refiner that rewrites indirect
phrasings into colour names (recording a "think" step), so it fixes exactly the indirect cases.
`ToyBenchmark` scores `overall` (fraction of square pixels with the asked colour) and
`consistency` (fraction of background pixels unchanged), both in [0, 1]. Its `turns=2` variant
asks for two colours in a row (multi-turn). `PrefixFromFile` is a refiner with an artifact (a text
file read at build time), for artifact checks and fingerprints. `PeekAnswer` is an oracle refiner
(it reads the wanted colour from the case meta, the toy world's ground truth) and `SquareReward`
an oracle reward (the benchmark's own `overall` against the wanted colour); both say so with
`reads_ground_truth = True` (`refine.oracle`).

For a process dying mid-run under torchrun, `REFINE_TOY_DIE=RANK:N` in the environment makes the
process of that rank SIGKILL itself at its N+1-th `edit` call, and `REFINE_TOY_CALLS=FILE` makes every
process append a line "RANK CASE_ID" to FILE for each request it edits (who edited what). For interruption tests, `PaintEditor.interrupt_after` (a class attribute, so the entry's spec and
cache key do not change) makes the N+1-th `edit` call raise `KeyboardInterrupt`; `PaintEditor.calls`
counts calls across instances and `PaintEditor.seen` records (case id, turn, input square colour).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from refine.compare.benchmarks.base import Case, CaseScore, default_request
from refine.rewards.base import RewardOutput
from refine.types import EditRequest, EditResult, Step

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 220), "yellow": (230, 210, 40)}
RIDDLES = {"the colour of the sky": "blue", "the colour of grass": "green", "the colour of a banana": "yellow", "the colour of blood": "red"}
GREY = (128, 128, 128)
BOX = (4, 4, 12, 12)  # left, top, right, bottom of the square


def toy_image(colour: str) -> Image.Image:
    image = Image.new("RGB", (16, 16), GREY)
    image.paste(COLOURS[colour], BOX)
    return image


class ToyBenchmark:
    """`cases` cases alternating direct and indirect phrasings; categories are the asked colour."""

    name = "toy"
    metrics = ("overall", "consistency")
    scale = (0.0, 1.0)

    def __init__(self, cases: int = 8, turns: int = 1, version: int = 1) -> None:
        self.n, self.n_turns, self.version = cases, turns, version
        self.score_calls = 0

    @property
    def key(self) -> str:
        return f"toy-t{self.n_turns}"

    @property
    def judge_key(self) -> str:
        return f"toy-judge-v{self.version}"

    def cases(self) -> list[Case]:
        names = list(COLOURS)
        riddles = {v: k for k, v in RIDDLES.items()}
        cases = []
        for i in range(self.n):
            start = names[i % len(names)]
            wanted = [names[(i + 1 + t) % len(names)] for t in range(self.n_turns)]
            phrase = [riddles[w] if (i // len(names) + i) % 2 else w for w in wanted]
            cases.append(
                Case(
                    id=f"toy-{i:03d}",
                    category=wanted[-1],
                    source=toy_image(start),
                    instructions=[f"make the square {p}" for p in phrase],
                    target=toy_image(wanted[-1]),
                    meta={"wanted": wanted},
                )
            )
        return cases

    def request(self, case: Case, turn: int, image: Image.Image, seed: int) -> EditRequest:
        return default_request(case, turn, image, seed)

    def score(self, items: Sequence[tuple[Case, list[EditResult]]]) -> list[CaseScore]:
        self.score_calls += 1
        out = []
        for case, results in items:
            turn_scores = [self._score(case.meta["wanted"][k], r.image) for k, r in enumerate(results)]
            final = turn_scores[-1]
            out.append(CaseScore(dict(final), turn_scores if self.n_turns > 1 else None, {"wanted": case.meta["wanted"]}))
        return out

    @staticmethod
    def _score(wanted: str, image: Image.Image) -> dict[str, float]:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)  # (16, 16, 3)
        left, top, right, bottom = BOX
        inside = np.zeros(pixels.shape[:2], bool)
        inside[top:bottom, left:right] = True
        hit = (np.abs(pixels - np.array(COLOURS[wanted])).max(-1) < 8)[inside].mean()
        kept = (np.abs(pixels - np.array(GREY)).max(-1) < 8)[~inside].mean()
        return {"overall": float(hit), "consistency": float(kept)}


class PaintEditor:
    """Paints the square with the last colour name in the instruction; unknown words change nothing."""

    interrupt_after: int | None = None
    calls = 0
    seen: list[tuple[str, int, tuple[int, int, int]]] = []  # (case id, turn, input square colour)

    def __init__(self, name: str = "paint") -> None:
        self.name = name

    def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        if PaintEditor.interrupt_after is not None and PaintEditor.calls >= PaintEditor.interrupt_after:
            raise KeyboardInterrupt
        die = os.environ.get("REFINE_TOY_DIE")  # "RANK:N": that process SIGKILLs itself at its N+1-th call
        if die and die.split(":")[0] == os.environ.get("RANK", "0") and PaintEditor.calls >= int(die.split(":")[1]):
            os.kill(os.getpid(), signal.SIGKILL)
        PaintEditor.calls += 1
        if os.environ.get("REFINE_TOY_CALLS"):
            with open(os.environ["REFINE_TOY_CALLS"], "a") as log:
                log.writelines(f"{os.environ.get('RANK', '0')} {r.meta.get('case_id')}\n" for r in requests)
        results = []
        for request in requests:
            image = request.image.copy()
            PaintEditor.seen.append((request.meta.get("case_id"), request.meta.get("turn"), image.getpixel(BOX[:2])))
            words = [w for w in request.instruction.split() if w in COLOURS]
            if words:
                image.paste(COLOURS[words[-1]], BOX)
            step = Step(kind="edit", source=self.name, instruction=request.instruction)
            results.append(EditResult(image, request.instruction, [step]))
        return results


def paint_editor(name: str = "paint") -> PaintEditor:
    """Factory used as an editor kind: `{kind: refine.testing.compare_fakes:paint_editor}`."""
    return PaintEditor(name)


class SpellOut:
    """A black-box refiner: rewrites 'the colour of the sky' into 'blue' before editing."""

    name = "spell"

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def __call__(self, editor):
        prefix = self.prefix

        class Spelled:
            def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
                rewritten = []
                for r in requests:
                    text = r.instruction
                    for riddle, colour in RIDDLES.items():
                        text = text.replace(riddle, colour)
                    rewritten.append(EditRequest(r.image, prefix + text, r.seed, r.meta))
                results = editor.edit(rewritten)
                for original, result in zip(requests, results):
                    result.steps.insert(0, Step(kind="think", source="spell", instruction=result.instruction,
                                                reasoning=f"rewrote {original.instruction!r}"))
                return results

        return Spelled()


class PrefixFromFile(SpellOut):
    """A refiner with an artifact: `path` is a text file whose content prefixes every instruction."""

    name = "prefix_file"

    def __init__(self, path: str) -> None:
        super().__init__(prefix=Path(path).read_text())


class PeekAnswer:
    """An oracle refiner: replaces each instruction by the colour the case wants (its ground truth)."""

    name = "peek"
    reads_ground_truth = True

    def __call__(self, editor):
        class Peeking:
            def edit(self, requests: Sequence[EditRequest]) -> list[EditResult]:
                answers = [
                    EditRequest(r.image, f"make the square {r.meta['wanted'][r.meta['turn']]}", r.seed, r.meta) for r in requests
                ]
                return editor.edit(answers)

        return Peeking()


class SquareReward:
    """An oracle reward: ToyBenchmark's `overall` of each output against the colour its case wants."""

    name = "square"
    reads_ground_truth = True

    def __call__(self, sources, outputs, instructions, metas):
        return RewardOutput([ToyBenchmark._score(m["wanted"][m["turn"]], o)["overall"] for o, m in zip(outputs, metas)])


def toy_config(out_dir: str | Path, cases: int = 8, turns: int = 1, entries: dict | None = None, **overrides) -> dict:
    """A compare config dict over the toy world: `base` (paint) and `+spell` (paint + SpellOut)."""
    here = "refine.testing.compare_fakes"
    return {
        "benchmark": {"kind": f"{here}:ToyBenchmark", "cases": cases, "turns": turns},
        "editor": {"kind": f"{here}:paint_editor"},
        "entries": entries or {"base": {}, "+spell": {"refiners": [{"kind": f"{here}:SpellOut"}]}},
        "batch_size": 3,
        "out_dir": str(out_dir),
        "progress": False,
        "bootstrap": 200,
        **overrides,
    }
