"""KRIS-Bench's official protocol: its authors' prompts from a checkout, asked, parsed and summarized as their scripts do.

Example:
    >>> from refine.compare.benchmarks.kris_official import parse_kris_score, parse_kris_dual, kris_summary
    >>> parse_kris_score('Compared... {"reasoning": "same", "consistency_score": 4}', "consistency_score")
    4
    >>> parse_kris_score("Steps: 1. Detect Difference ... score 3/5", "quality_score")   # the first "n/5"
    3
    >>> parse_kris_dual('{"instruction_score": 5, "knowledge_score": 2, "instruction_reasoning": "ok"}')
    (5, 2)
    >>> kris_summary([("chemistry", {"consistency": 100.0, "quality": 75.0, "instruction": 50.0, "knowledge": 0.0})])["Overall"]
    56.25

Where the prompts are: the checkout's ``utils/prompts.py`` (what `metrics_*.py` import; an older
layout had ``ReasonEdit/prompts.py``), read with `ast`, never executed. Which constants a run needs
depends on its categories (`kris_prompt_names`).

How each case is asked (`kris_queries`, one generated answer per question, the question first and
the images after it with the label texts the scripts put before each image):

| categories | consistency | instruction (and knowledge) | quality |
|---|---|---|---|
| the 10 knowledge ones (`KNOWLEDGE`) | ``prompt_consist`` [original, edited] | ``prompt_dual_evaluation`` with the explanation [original, edited]: instruction and knowledge scores | ``prompt_quality`` [edited] |
| ``anomaly_correction`` | ``prompt_consist`` | ``prompt_abnormal_instruction_following`` with the explanation | ``prompt_quality`` |
| ``viewpoint_change`` | ``prompt_consist`` | ``prompt_view_instruction_following`` [original, edited, ground truth] | ``prompt_quality`` |
| ``multi-element_composition`` | ``prompt_consist_multi`` [reference 1..n, predicted] | ``prompt_instruction_multi`` [reference 1..n, predicted] | ``prompt_quality`` |
| ``temporal_prediction`` | ``prompt_consist_temporal`` [frames in order, the generated one at its place] | ``prompt_instruction_temporal`` (same frames) | ``prompt_quality`` |
| the other (attribute, spatial, decomposition) ones | ``prompt_consist`` | ``prompt_instruction_following`` | ``prompt_quality`` |

The scripts ask gpt-4o with ``max_tokens=1000`` and no temperature; refine pins temperature 0 (see
`protocols`) and sends the images in its backend's format (the scripts send the files' bytes as
JPEG data URLs). The instruction and explanation are the annotation's ``ins_en`` and ``explain_en`` (the scripts at
some commits read ``instruction``/``explain``, keys the released annotations do not have; BAGEL's
copy of the scripts reads ``ins_en``/``explain_en``). The anomaly category is asked with the
explanation prompt, which the scripts meant by their ``"abnormality_correction" in category`` test
(the category's older name).

Parsing (`parse_kris_score`, metrics_common.py's `extract_score_and_reason`): the first ``{...}``
holding the score key read as JSON; else ``<name> score: n``; else the first ``n/5``,
``n out of 5``, or lone digit 1-5 anywhere in the answer (the authors' fallback, kept as it is).
The dual answer (`parse_kris_dual`, metrics_knowledge.py's `extract_dual_scores`): the JSON object
holding ``instruction_score``, else ``instruction score: n`` / ``knowledge score: n``.

Aggregation (`kris_summary`, the summarize.py that reports KRIS-Bench as its paper does, kept in
ByteDance-Seed/Bagel ``eval/gen/kris/summarize.py``): every 1-5 score becomes (s - 1) * 25; the
seven dimension groups (`GROUPS`) report each score's mean and AVG, the mean of all their scores
pooled; Factual / Conceptual / Procedural knowledge (`META`) and Overall pool the scores the same way.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from refine.compare.benchmarks.protocols import _find, read_constants
from refine.errors import InputError

KRIS_FILES = ("utils/prompts.py", "Kris_Bench/utils/prompts.py", "ReasonEdit/prompts.py", "prompts.py")
KNOWLEDGE = (
    "abstract_reasoning", "mathematics", "practical_knowledge", "medicine", "rule-based_reasoning",
    "biology", "geography", "chemistry", "humanities", "physics",
)  # metrics_knowledge.py's CATEGORIES: judged with the dual (instruction + knowledge) prompt
ANOMALY, VIEWPOINT, MULTI, TEMPORAL = "anomaly_correction", "viewpoint_change", "multi-element_composition", "temporal_prediction"
GROUPS = {
    "Attribute Perception": ("count_change", "color_change", "size_adjustment", "part_completion", "anomaly_correction"),
    "Spatial Perception": ("viewpoint_change", "position_movement"),
    "Temporal Prediction": ("temporal_prediction",),
    "Social Science": ("humanities", "practical_knowledge"),
    "Natural Science": ("biology", "chemistry", "geography", "medicine", "mathematics", "physics"),
    "Logical Reasoning": ("abstract_reasoning", "rule-based_reasoning"),
    "Instruction Decomposition": ("multi-element_composition", "multi-instruction_execution"),
}
META = {
    "Factual Knowledge": ("Attribute Perception", "Spatial Perception", "Temporal Prediction"),
    "Conceptual Knowledge": ("Social Science", "Natural Science"),
    "Procedural Knowledge": ("Logical Reasoning", "Instruction Decomposition"),
}
SCORES = ("consistency", "quality", "instruction", "knowledge")  # summarize.py's VC, VQ, IF, KP, in its order
SHORT = {"consistency": "VC", "quality": "VQ", "instruction": "IF", "knowledge": "KP"}

_SCORE_FALLBACKS = (r"([1-5])\s*/\s*5", r"([1-5])\s+out\s+of\s+5", r"\b([1-5])\b")


def kris_prompt_names(categories: Iterable[str]) -> tuple[str, ...]:
    """The prompt constants the official scripts use for `categories`."""
    names = {"prompt_quality"}
    for category in categories:
        if category == MULTI:
            names |= {"prompt_consist_multi", "prompt_instruction_multi"}
        elif category == TEMPORAL:
            names |= {"prompt_consist_temporal", "prompt_instruction_temporal"}
        else:
            names.add("prompt_consist")
            names.add(
                "prompt_dual_evaluation" if category in KNOWLEDGE
                else "prompt_abnormal_instruction_following" if category == ANOMALY
                else "prompt_view_instruction_following" if category == VIEWPOINT
                else "prompt_instruction_following"
            )
    return tuple(sorted(names))


def read_kris_prompts(path: str | Path, categories: Iterable[str]) -> dict[str, str]:
    """The prompt constants `categories` need, from the checkout's ``utils/prompts.py`` (found under `path`)."""
    return read_constants(_find(Path(path).expanduser(), KRIS_FILES, "kris"), kris_prompt_names(categories), "kris")


def fill(template: str, benchmark: str, name: str, **fields: Any) -> str:
    """`template.format(**fields)` as the authors' scripts call it; a template it cannot fill fails naming it."""
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as err:
        raise InputError(f"{benchmark} judge prompts: {name} cannot be filled with {', '.join(fields)} ({err!r})") from None


def _frame(name: str) -> int | None:
    match = re.search(r"(\d+)-(\d+)", name)
    return int(match.group(2)) if match else None


def kris_queries(
    prompts: dict[str, str], category: str, item: dict[str, Any], instruction: str
) -> dict[str, tuple[str, list[str | tuple[str, int]]]]:
    """A case's questions: {"consistency" | "instruction" | "dual" | "quality": (question, parts after it)}.

    Parts are label texts and image slots in the order the scripts send them: ``("ori", i)`` is
    the case's i-th ``ori_img``, ``("gt", 0)`` its ``gt_img``, ``("edit", 0)`` the edited image.
    """
    explanation = str(item.get("explain_en") or "")
    original, edited = ["This is the original image:", ("ori", 0)], ["This is the edited image:", ("edit", 0)]
    quality = (prompts["prompt_quality"], ["This is the image to evaluate:", ("edit", 0)])
    if category == MULTI:
        refs = item["ori_img"] if isinstance(item["ori_img"], list) else [item["ori_img"]]
        parts: list[str | tuple[str, int]] = []
        for i in range(len(refs)):
            parts += [f"Reference Image {i + 1}:", ("ori", i)]
        parts += ["Predicted Image:", ("edit", 0)]
        return {
            "consistency": (fill(prompts["prompt_consist_multi"], "kris", "prompt_consist_multi", instruct=instruction), parts),
            "instruction": (fill(prompts["prompt_instruction_multi"], "kris", "prompt_instruction_multi", instruct=instruction), parts),
            "quality": quality,
        }
    if category == TEMPORAL:
        refs = item["ori_img"] if isinstance(item["ori_img"], list) else [item["ori_img"]]
        numbers = [_frame(str(name)) for name in refs]
        known = [n for n in numbers if n is not None]
        missing = {1, 2, 3, 4} - set(known)
        generated = missing.pop() if len(missing) == 1 else (max(known) + 1 if known else 1)
        # the frames in time order, the generated one at its place (metrics_temporal_prediction.py)
        frames = [(n, ("ori", i), "Reference") for i, n in enumerate(numbers) if n is not None]
        frames = sorted([*frames, (generated, ("edit", 0), "Generated")])
        parts = []
        for number, slot, kind in frames:
            parts += [f"Frame {number} ({kind}):", slot]
        fields = {"N": generated, "instruct": instruction}
        return {
            "consistency": (fill(prompts["prompt_consist_temporal"], "kris", "prompt_consist_temporal", **fields), parts),
            "instruction": (fill(prompts["prompt_instruction_temporal"], "kris", "prompt_instruction_temporal", **fields), parts),
            "quality": quality,
        }
    queries = {"consistency": (fill(prompts["prompt_consist"], "kris", "prompt_consist", instruct=instruction), original + edited)}
    if category in KNOWLEDGE:
        text = fill(prompts["prompt_dual_evaluation"], "kris", "prompt_dual_evaluation", instruct=instruction, explanation=explanation)
        queries["dual"] = (text, original + edited)
    elif category == ANOMALY:
        name = "prompt_abnormal_instruction_following"
        queries["instruction"] = (fill(prompts[name], "kris", name, instruct=instruction, explanation=explanation), original + edited)
    elif category == VIEWPOINT:
        name = "prompt_view_instruction_following"
        truth = ["This is the ground truth image:", ("gt", 0)]
        queries["instruction"] = (fill(prompts[name], "kris", name, instruct=instruction), original + edited + truth)
    else:
        name = "prompt_instruction_following"
        queries["instruction"] = (fill(prompts[name], "kris", name, instruct=instruction), original + edited)
    queries["quality"] = quality
    return queries


def kris_colon(category: str) -> str | None:
    """The `colon` of `parse_kris_score` for the script that judges `category`."""
    return None if category in (MULTI, TEMPORAL) else "[:：]" if category in KNOWLEDGE else "[:：]?"


def _json_score(text: str, key: str) -> int | None:
    match = re.search(r"\{[^{}]*" + re.escape(key) + r"[^{}]*\}", text, re.DOTALL)
    if not match:
        return None
    try:
        value = json.loads(match.group(0)).get(key)
        return int(value) if value is not None else None
    except (ValueError, TypeError, AttributeError):
        return None


def parse_kris_score(text: str | None, key: str, colon: str | None = "[:：]?") -> int | None:
    """A 1-5 score from an answer by metrics_common.py's rules (`key`: consistency_score, instruction_score, quality_score).

    `colon` is the separator the ``<name> score: n`` fallback wants: optional in metrics_common.py,
    required in metrics_knowledge.py (``"[:：]"``); None skips that fallback, as the multi-element and
    temporal scripts call the extractor without it.
    """
    text = text or ""
    score = _json_score(text, key)
    if score is not None:
        return score
    prefix = [key.split("_")[0] + r"[_\s]*score\s*" + colon + r"\s*([1-5])"] if colon is not None else []
    for pattern in (*prefix, *_SCORE_FALLBACKS):
        match = re.search(pattern, text, re.IGNORECASE | re.DOTALL)
        if match:
            return int(match.group(1))
    return None


def parse_kris_dual(text: str | None) -> tuple[int | None, int | None]:
    """(instruction score, knowledge score) from a dual answer by metrics_knowledge.py's rules."""
    text = text or ""
    match = re.search(r"\{[^{}]*instruction_score[^{}]*\}", text, re.DOTALL)
    if match:
        try:
            data = json.loads(match.group(0))
            as_int = lambda v: int(v) if v is not None else None  # noqa: E731
            return as_int(data.get("instruction_score")), as_int(data.get("knowledge_score"))
        except (ValueError, TypeError, AttributeError):
            pass  # the scripts fall back to the regexes
    found = []
    for name in ("instruction", "knowledge"):
        hit = re.search(name + r"[_\s]*score\s*[:：]\s*([1-5])", text, re.IGNORECASE)
        found.append(int(hit.group(1)) if hit else None)
    return found[0], found[1]


def normalize(score: float | None) -> float | None:
    """summarize.py's 100-point scale: (s - 1) * 25."""
    return None if score is None else (score - 1) * 25


def group_of(category: str) -> str | None:
    return next((group for group, members in GROUPS.items() if category in members), None)


def kris_summary(rows: Sequence[tuple[str, dict[str, float | None]]]) -> dict[str, Any]:
    """summarize.py's table from (category, {score: value on the 100-point scale}) per case.

    Each group gets the mean of each of its scores (VC, VQ, IF, and KP for the knowledge groups)
    and AVG, the mean of all its scores pooled; the three knowledge kinds and Overall pool their
    groups' scores the same way. Missing scores are left out, as summarize.py leaves out None.
    """
    pooled: dict[str, dict[str, list[float]]] = {group: {s: [] for s in SCORES} for group in GROUPS}
    for category, scores in rows:
        group = group_of(category)
        if group is None:
            continue
        for name in SCORES:
            value = scores.get(name)
            if value is not None and not (name == "knowledge" and category not in KNOWLEDGE):
                pooled[group][name].append(float(value))
    avg = lambda values: sum(values) / len(values) if values else None  # noqa: E731
    flat = {group: [v for s in SCORES for v in pooled[group][s]] for group in GROUPS}
    out: dict[str, Any] = {}
    for group in GROUPS:
        if flat[group]:
            out[group] = {SHORT[s]: avg(pooled[group][s]) for s in SCORES if pooled[group][s]} | {"AVG": avg(flat[group])}
    for meta, groups in META.items():
        values = [v for group in groups for v in flat[group]]
        if values:
            out[meta] = {"AVG": avg(values)}
    everything = [v for group in GROUPS for v in flat[group]]
    out["Overall"] = avg(everything)
    return out


__all__ = [
    "GROUPS", "KNOWLEDGE", "KRIS_FILES", "META", "fill", "kris_colon", "kris_prompt_names", "kris_queries", "kris_summary", "normalize",
    "parse_kris_dual", "parse_kris_score", "read_kris_prompts",
]
