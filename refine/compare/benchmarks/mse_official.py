"""MSE-Bench's official protocol (VINCIE's evaluation/compute_score.py): its prompt from a checkout, its parsing, its table.

Example:
    >>> from refine.compare.benchmarks.mse_official import parse_mse, mse_question
    >>> parse_mse('```json\\n{"reason": "ok", "prompt_following": 8, "consistency": 7}\\n```')
    (8, 7)
    >>> parse_mse("prompt_following: 8, consistency: 7") is None     # not a dict literal: asked again
    True
    >>> mse_question("Turns {num_prompts}, images {num_images}: {editing_prompt} {{json}}", ["add a hat", "make it red"])
    "Turns 2, images 3: {'turn1': 'add a hat', 'turn2': 'make it red'} {json}"

Where the prompt is: the module-level ``prompt_template`` of the checkout's
``evaluation/compute_score.py`` (read with `ast`, never executed).

How a session is asked (compute_score.py's `process_batch`): turn k (1-based) is judged by one
question, `prompt_template` filled with the first k instructions as the dict
``{'turn1': ..., 'turnk': ...}`` written as Python prints it, `num_prompts` = k and `num_images` =
k + 1, sent before the images: the source, resized to the turn-1 output's size, then the outputs of
turns 1..k. An answer is read with `parse_mse` (its `parse_mixed_string`: strip the characters of
"```json" from both ends, then a Python literal, then JSON) and must give `prompt_following` and
`consistency`; a turn passes when both are strictly above the threshold (6), and a session stops at
its first failing turn. An unreadable answer is asked again, up to `NUM_TRY` times in all, when the
judge samples (temperature > 0; a greedy judge would repeat its answer); a session whose turn stays
unreadable has no score (the script stops with an error there).

The table (`mse_summary`, what compute_score.py prints and writes to its CSV): for every turn k, the
success rate (sessions that passed turn k), and the mean prompt-following, consistency and
sqrt(prompt_following * consistency) at turn k, each summed over the sessions that reached turn k
and divided by all sessions (so a session that stopped earlier counts 0).
"""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path
from typing import Any, Sequence

from refine.compare.benchmarks.kris_official import fill
from refine.compare.benchmarks.protocols import _find, read_constants

MSE_FILES = ("evaluation/compute_score.py", "VINCIE/evaluation/compute_score.py", "compute_score.py")
MSE_NAMES = ("prompt_template",)
NUM_TRY = 20  # compute_score.py's attempts per turn


def read_mse_prompts(path: str | Path) -> dict[str, str]:
    """`prompt_template` from the checkout's ``evaluation/compute_score.py`` (found under `path`)."""
    return read_constants(_find(Path(path).expanduser(), MSE_FILES, "mse-bench"), MSE_NAMES, "mse-bench")


def mse_question(template: str, instructions: Sequence[str]) -> str:
    """The question for the last of `instructions` (turns 1..k), as compute_score.py fills it."""
    editing_prompt = {f"turn{i + 1}": text for i, text in enumerate(instructions)}
    return fill(
        template, "mse-bench", "prompt_template",
        editing_prompt=str(editing_prompt), num_prompts=len(editing_prompt), num_images=len(editing_prompt) + 1,
    )


def parse_mse(text: str | None) -> tuple[float, float] | None:
    """(prompt_following, consistency) from an answer by compute_score.py's rules, or None when it would ask again."""
    if text is None:
        return None
    text = text.strip("```json").strip("```")  # noqa: B005  (a character set, as the script strips it)
    data: Any = None
    try:
        data = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return None
    if not isinstance(data, dict):
        return None
    pf, cc = data.get("prompt_following"), data.get("consistency")
    if not all(isinstance(v, (int, float)) for v in (pf, cc)):
        return None  # the script's comparison with the threshold fails, and it asks again
    return pf, cc


def mse_summary(rows: Sequence[Any]) -> dict[str, Any]:
    """compute_score.py's per-turn table from the rows of one entry (objects with `scores` and `turn_scores`).

    `turn_scores` hold, per turn, ``overall`` (100 passed, 0 failed or not reached, None unknown)
    and ``pf``/``cc`` on refine's 0-100 scale (None where not judged); rates here are on the
    script's scales (success 0-1, scores 0-10). Sessions without a score are left out and counted.
    """
    scored = [r for r in rows if r.scores.get("overall") is not None and r.turn_scores]
    turns = max((len(r.turn_scores) for r in scored), default=0)
    table: dict[str, dict[str, float]] = {}
    n = len(scored)
    for k in range(turns):
        success = pf = cc = overall = 0.0
        for row in scored:
            turn = row.turn_scores[k] if k < len(row.turn_scores) else {}
            success += turn.get("overall") == 100.0
            if turn.get("pf") is not None and turn.get("cc") is not None:
                p, c = turn["pf"] / 10.0, turn["cc"] / 10.0
                pf, cc, overall = pf + p, cc + c, overall + math.sqrt(max(p * c, 0.0))
        table[f"turn{k + 1}"] = {
            "success_rate": success / n, "prompt_following": pf / n, "consistency": cc / n, "overall": overall / n,
        } if n else {}
    return {"sessions": n, "unscored": len(rows) - n, "turns": table}


__all__ = ["MSE_FILES", "NUM_TRY", "mse_question", "mse_summary", "parse_mse", "read_mse_prompts"]
