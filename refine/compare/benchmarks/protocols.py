"""Official judging protocols: the authors' prompts read from the user's checkout, the judge and temperature they pin.

Example:
    >>> from refine.compare.benchmarks.protocols import PINNED, protocol_label, parse_score_list
    >>> PINNED["gedit"].judge, PINNED["kris"].judge
    ('gpt-4.1', 'gpt-4o')
    >>> protocol_label("gedit", scheme="refine-judge", model="Qwen2.5-VL-72B-Instruct", temperature=0.0)
    'refine-judge'
    >>> protocol_label("gedit", scheme="official", model="gpt-4.1", temperature=0.0)
    'official'
    >>> protocol_label("gedit", scheme="official", model="Qwen2.5-VL-72B-Instruct", temperature=0.0)
    'official-prompts (judge Qwen2.5-VL-72B-Instruct, not the pinned gpt-4.1)'
    >>> parse_score_list('{"score" : [7, 3], "reasoning" : "ok"}')
    [7.0, 3.0]
    >>> parse_imgedit_scores("Brief reasoning: fine.\\nPrompt Compliance: 4\\nVisual Seamlessness: 5\\nPhysical & Detail Fidelity: 3")
    {'Prompt Compliance': 4, 'Visual Seamlessness': 5, 'Physical & Detail Fidelity': 3}

A judge spec selects a scheme (`judge.scheme`):

* ``refine-judge`` (default): our own wording of each benchmark's criteria (the `CRITERIA` of its
  module), read as score-logit expected values or sampled. Reports say "refine-judge", never the
  benchmark's official name.
* ``official``: the authors' prompts, read from the user's checkout of the benchmark's repository
  (`judge.prompts`; nothing of theirs ships with refine), asked as their scripts ask them (one
  generated answer per query, parsed by their rules), aggregated by their rules. The result is
  labelled ``official`` only when the backend's model is the one the protocol pins (`PINNED`) at
  the pinned temperature; with another judge, ``official-prompts (judge X, ...)``.

Where the prompts are read (official relative paths first; `judge.prompts` may also be the file):

| benchmark | file in the checkout | what is read |
|---|---|---|
| gedit | ``viescore/vie_prompts.py`` (VIEScore, as GEdit-Bench vendors it; also ``GEdit-Bench/viescore/``) | the string constants ``_context_no_delimit``, ``_prompts_0shot_two_image_edit_rule``, ``_prompts_0shot_tie_rule_SC``, ``_prompts_0shot_rule_PQ`` (read with `ast`, never executed) |
| edival (optional) | ``detector/instruction_detector.py`` of EdiVal | the VLM question constants in `edival_metrics.VLM_QUESTIONS` (read with `ast`); the metrics themselves are computed (`edival_metrics.py`) |
| imgedit | the ``--prompts_json`` file of ``Benchmark/Basic/basic_bench.py`` (``prompts.json`` or ``Benchmark/Basic/prompts.json``) | ``{edit_type: prompt}`` with ``<edit_prompt>`` |
| rise | ``utils.py`` of the RISEBench checkout (what its gpt_eval.py imports) | the ``prompt_*`` string constants in `RISE_NAMES` (read with `ast`) |
| kris | ``utils/prompts.py`` of the Kris_Bench checkout (what its metrics_*.py import; also the older ``ReasonEdit/prompts.py``) | the ``prompt_*`` string constants its categories need (`kris_official.kris_prompt_names`, read with `ast`) |
| mse-bench | ``evaluation/compute_score.py`` of the VINCIE checkout | its ``prompt_template`` string constant (read with `ast`, never executed) |

KRIS-Bench (`kris_official`): consistency, instruction following and quality questions per case,
knowledge plausibility with instruction following in one dual question for the ten knowledge
categories, each answer parsed by metrics_*.py's rules, scores put on the 100-point scale and
summarized per dimension and per group as the paper reports (summarize.py); `exclude` keeps
dropping Temporal as EditThinker does. MSE-Bench (`mse_official`): one question per turn over the
source and all outputs so far, a turn passes when both scores are > 6, scoring stops at the first
failure, and the per-turn success rates are compute_score.py's. Those tables go to the report's
``official_summary``. EdiVal's official metrics are
detector-based, not a VLM rubric: for ``edival``, ``scheme: official`` computes them
(`edival_metrics.py`: Grounding DINO detections and EdiVal's rules per edit type for IF, DINO
features of the unchanged objects and the background for CC, O = sqrt(IF x CC) per turn), with the
benchmark's `detector` models and the judge backend as EdiVal's VLM; `judge.prompts` is optional
there (an EdiVal checkout: its ``detector/instruction_detector.py`` VLM question constants, read
with `ast`). It is labelled ``official-metrics (...)``, naming the models and what differs from EdiVal.

Pinned judges (what the papers and scripts use): GPT-4.1 for GEdit-Bench, ImgEdit and RISEBench,
GPT-4o for KRIS-Bench, gpt-5-nano for MSE-Bench (the default `--api_model` of VINCIE's
compute_score.py, which sends no temperature: 1, the API default and the only one that model takes,
is pinned); ImgEdit also pins 3 judge repeats. Temperature is otherwise pinned to 0 (greedy, as
RISEBench's gpt_eval.py sends) so that reruns differ only by the service; ImgEdit's
basic_bench.py sends no temperature (the API default), so its published numbers
carry sampling noise: the Inline Critic paper warns that ImgEdit's run-to-run variance can exceed
method gaps, which is why `judge.repeats` re-judges every case and the report gives the spread of
the headline over repeats (`refine.compare.stats.repeat_interval`).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

from refine.errors import ConfigError, InputError

SCHEMES = ("refine-judge", "official")


@dataclass(frozen=True)
class Pinned:
    """What a benchmark's official protocol fixes: the judge model, its temperature, default repeats."""

    judge: str
    temperature: float = 0.0
    repeats: int = 1


PINNED = {
    "gedit": Pinned("gpt-4.1"),
    "imgedit": Pinned("gpt-4.1", repeats=3),  # run-to-run variance can exceed method gaps (Inline Critic paper)
    "rise": Pinned("gpt-4.1"),
    "kris": Pinned("gpt-4o"),
    # VINCIE's compute_score.py: --api_model defaults to gpt-5-nano and no temperature is sent (the API default, 1)
    "mse-bench": Pinned("gpt-5-nano", temperature=1.0),
}
OFFICIAL_PROMPTS = ("gedit", "imgedit", "rise", "kris", "mse-bench")  # benchmarks whose authors' prompt files refine reads
OFFICIAL_METRICS = ("edival",)  # benchmarks whose official scheme is a computed metric (prompts optional)

VIESCORE_FILES = ("viescore/vie_prompts.py", "GEdit-Bench/viescore/vie_prompts.py", "vie_prompts.py")
VIESCORE_NAMES = ("_context_no_delimit", "_prompts_0shot_two_image_edit_rule", "_prompts_0shot_tie_rule_SC", "_prompts_0shot_rule_PQ")
IMGEDIT_FILES = ("prompts.json", "Benchmark/Basic/prompts.json", "Basic/prompts.json")
RISE_FILES = ("utils.py", "RISEBench/utils.py")
RISE_NAMES = (
    "prompt_consist", "prompt_reasoning", "prompt_reasoning_w_input", "prompt_generation", "prompt_spatial_ref",
    "prompt_spatial_ref_img", "prompt_spatial_ref_w_input", "prompt_spatial_cons", "prompt_spatial_qual",
    "prompt_logical_cons_ans", "prompt_logical_txt", "prompt_logical_cons", "prompt_logical_img", "prompt_logical_img_wo_q",
)

_SCORE_LIST = re.compile(r'"?score"?\s*:\s*\[([^\]]*)\]', re.IGNORECASE)
_NAMED_SCORE = re.compile(r"^\s*([^:\n]+?)\s*:\s*(\d+)\s*$", re.MULTILINE)


def protocol_label(benchmark: str, *, scheme: str, model: str | None, temperature: float, repeats: int = 1) -> str:
    """How a result is labelled: ``official``, ``official-prompts (...)`` or ``refine-judge`` (see the module docstring).

    Official needs the pinned judge, temperature and at least the pinned number of repeats.
    """
    if scheme != "official":
        return "refine-judge"
    pinned = PINNED.get(benchmark)
    if pinned is None:
        return "official-prompts"
    gaps = []
    if (model or "") != pinned.judge:
        gaps.append(f"judge {model}, not the pinned {pinned.judge}")
    if temperature != pinned.temperature:
        gaps.append(f"temperature {temperature:g}, not the pinned {pinned.temperature:g}")
    if repeats < pinned.repeats:
        gaps.append(f"{repeats} judge repeat(s), fewer than the pinned {pinned.repeats}")
    return "official" if not gaps else f"official-prompts ({'; '.join(gaps)})"


def check_scheme(benchmark: str, scheme: str, prompts: str | None) -> None:
    """Refuse an official scheme refine cannot honour, before any compute."""
    if scheme != "official":
        if prompts is not None:
            raise ConfigError(f"{benchmark} judge: prompts={prompts!r} is read only with scheme: official; set scheme: official or drop prompts")
        return
    if benchmark in OFFICIAL_METRICS:
        return
    if benchmark not in OFFICIAL_PROMPTS:
        raise ConfigError(
            f"{benchmark} judge: scheme official is not available (refine does not read its authors' prompt files yet; "
            f"it applies their aggregation under scheme: refine-judge); official prompts are read for {', '.join(OFFICIAL_PROMPTS)}"
        )
    if prompts is None:
        raise ConfigError(
            f"{benchmark} judge: scheme official needs prompts: <your checkout of the benchmark's repository> "
            "(the authors' prompts are read from it; refine ships none of them)"
        )


def _find(root: Path, candidates: tuple[str, ...], benchmark: str) -> Path:
    if root.is_file():
        return root
    for relative in candidates:
        if (root / relative).is_file():
            return root / relative
    raise InputError(f"{benchmark} judge prompts: none of {', '.join(candidates)} under {str(root)!r}; point prompts to your checkout or to the file")


def read_constants(file: Path, names: tuple[str, ...], benchmark: str) -> dict[str, str]:
    """The module-level string constants `names` of a Python file, read with `ast` (the file is never executed)."""
    try:
        tree = ast.parse(file.read_text(encoding="utf-8-sig"))
    except SyntaxError as err:
        raise InputError(f"{benchmark} judge prompts: {file} is not Python ({err.msg}, line {err.lineno})") from None
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id in names:
                    found[target.id] = node.value.value
    missing = [name for name in names if name not in found]
    if missing:
        raise InputError(f"{benchmark} judge prompts: {file} lacks the string constant(s) {', '.join(missing)}")
    return found


def read_viescore_prompts(path: str | Path) -> dict[str, str]:
    """VIEScore's four prompt constants from `vie_prompts.py` (found under `path`)."""
    return read_constants(_find(Path(path).expanduser(), VIESCORE_FILES, "gedit"), VIESCORE_NAMES, "gedit")


def read_rise_prompts(path: str | Path) -> dict[str, str]:
    """RISEBench's judge prompts from the checkout's `utils.py` (found under `path`)."""
    return read_constants(_find(Path(path).expanduser(), RISE_FILES, "rise"), RISE_NAMES, "rise")


def _format(prompt: str, **fields: str) -> str:
    """`str.format` for the fields the prompts name, without failing on other braces."""
    for name, value in fields.items():
        prompt = prompt.replace("{" + name + "}", value)
    return prompt.replace("{{", "{").replace("}}", "}")


def rise_queries(prompts: dict[str, str], item: dict, instruction: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """RISEBench's questions for one case, as its gpt_eval.py picks them per category and reference kind.

    Returns {dimension: (question, image roles)} for "consistency", "reasoning" and "quality" (the
    ones the case is judged on); roles are "input" (the source), "reference" (`reference_img`) and
    "output" (the edit), in the order they are sent, after the question.
    """
    category, reference = item.get("category"), str(item.get("reference") or item.get("reference_txt") or "")
    with_reasoning_image = bool(item.get("reasoning_img"))
    queries: dict[str, tuple[str, tuple[str, ...]]] = {}
    if category in ("temporal_reasoning", "causal_reasoning"):
        first = "input"
        if "reference_img" in item and with_reasoning_image:
            queries["reasoning"] = (_format(prompts["prompt_reasoning_w_input"], instruct=instruction, reference=reference), (first, "output"))
        else:
            queries["reasoning"] = (_format(prompts["prompt_reasoning"], instruct=instruction, reference=reference), ("output",))
        consistency, quality = _format(prompts["prompt_consist"], instruct=instruction), prompts["prompt_generation"]
    elif category == "spatial_reasoning":
        first = "input"
        if item.get("reference_img"):
            first = "reference"  # the consistency question then compares with the reference too, as gpt_eval.py does
            queries["reasoning"] = (_format(prompts["prompt_spatial_ref_img"], instruct=instruction), (first, "output"))
        elif with_reasoning_image:
            queries["reasoning"] = (_format(prompts["prompt_spatial_ref_w_input"], instruct=instruction, reference=reference), (first, "output"))
        else:
            queries["reasoning"] = (_format(prompts["prompt_spatial_ref"], instruct=instruction, reference=reference), ("output",))
        consistency, quality = _format(prompts["prompt_spatial_cons"], instruct=instruction), prompts["prompt_spatial_qual"]
    elif category == "logical_reasoning":
        quality = None  # logical cases are judged on consistency and reasoning only
        if item.get("reference_txt"):
            first = "input"
            consistency = _format(prompts["prompt_logical_cons_ans"], instruct=instruction, reference=reference)
            queries["reasoning"] = (_format(prompts["prompt_logical_txt"], instruct=instruction, reference=reference), ("output",))
        else:
            first = "reference"
            consistency = _format(prompts["prompt_logical_cons"], instruct=instruction)
            text = prompts["prompt_logical_img_wo_q"] if "reasoning_wo_ins" in item else _format(prompts["prompt_logical_img"], instruct=instruction)
            queries["reasoning"] = (text, (first, "output"))
    else:
        raise InputError(f"rise: official scoring knows the categories temporal/causal/spatial/logical_reasoning, not {category!r}")
    if not item.get("consistency_free"):
        queries["consistency"] = (consistency, (first, "output"))
    if quality is not None:
        queries["quality"] = (quality, ("output",))
    return queries


def parse_final_score(text: str) -> list[int] | None:
    """The integers after the first ``Final Score(s):`` that has any (RISEBench's `extract`), or None.

    >>> parse_final_score("steps...\\n**Final Score:** **4**"), parse_final_score("no verdict")
    ([4], None)
    """
    for label in ("Final Score", "Final Scores"):
        for match in re.findall(r"\*?\*?" + label + r"\*?\*?:?\s*([\d*\s,\n]*)", text or "", re.IGNORECASE):
            numbers = [int(n) for n in re.findall(r"\d+", match)]
            if numbers:
                return numbers
    return None


def rise_aggregate(category: str, parsed: dict[str, list[int] | None]) -> dict[str, float | None] | None:
    """One case's RISEBench ratings (1-5), weighted score and completion from its parsed answers, as gpt_eval.py.

    Logical cases answer consistency and reasoning with 0/1, mapped to 1/5. A case whose answers do
    not all parse gets None (gpt_eval.py then counts it as not complete).

    >>> rise_aggregate("causal_reasoning", {"consistency": [5], "reasoning": [5], "quality": [4]})["complete"]
    0
    >>> rise_aggregate("logical_reasoning", {"consistency": [1], "reasoning": [1]})
    {'consistency': 5, 'reasoning': 5, 'quality': None, 'score': 5.0, 'complete': 1}
    """
    if any(not v for v in parsed.values()):
        return None
    consistency = parsed["consistency"][0] if "consistency" in parsed else None
    reasoning, quality = parsed["reasoning"][0], parsed["quality"][0] if "quality" in parsed else None
    if category == "logical_reasoning":
        consistency, reasoning = 4 * min(consistency, 1) + 1, 4 * min(reasoning, 1) + 1
        score = 0.3 * consistency + 0.7 * reasoning
        complete = int(consistency == 5 and reasoning == 5)
    else:
        if consistency is None:  # consistency_free
            score = 0.2 * quality + 0.8 * reasoning
        else:
            score = 0.3 * consistency + 0.5 * reasoning + 0.2 * quality
        complete = int(consistency == 5 and reasoning == 5 and quality == 5)
    if reasoning == 1:
        score = max(1.0, score * 0.5)
    return {"consistency": consistency, "reasoning": reasoning, "quality": quality, "score": float(score), "complete": complete}


def viescore_queries(prompts: dict[str, str], instruction: str) -> tuple[str, str]:
    """(SC question for [source, edited], PQ question for [edited]) assembled as VIEScore does: context, rules, task."""
    sc = "\n".join(
        [prompts["_context_no_delimit"], prompts["_prompts_0shot_two_image_edit_rule"],
         prompts["_prompts_0shot_tie_rule_SC"].replace("<instruction>", instruction)]
    )
    pq = "\n".join([prompts["_context_no_delimit"], prompts["_prompts_0shot_rule_PQ"]])
    return sc, pq


def read_imgedit_prompts(path: str | Path) -> dict[str, str]:
    """ImgEdit's ``{edit_type: prompt}`` JSON (basic_bench.py's ``--prompts_json``), found under `path`."""
    file = _find(Path(path).expanduser(), IMGEDIT_FILES, "imgedit")
    try:
        data = json.loads(file.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise InputError(f"imgedit judge prompts: {file} is not valid JSON ({err})") from None
    if not isinstance(data, dict) or not data or not all(isinstance(v, str) for v in data.values()):
        raise InputError(f"imgedit judge prompts: {file} must map each edit_type to a prompt string")
    return data


def parse_score_list(text: str) -> list[float] | None:
    """The numbers of the last ``"score": [a, b, ...]`` in a VIEScore answer, or None."""
    matches = _SCORE_LIST.findall(text or "")
    if not matches:
        return None
    try:
        return [float(x) for x in matches[-1].split(",") if x.strip()]
    except ValueError:
        return None


def parse_imgedit_scores(text: str) -> dict[str, int]:
    """Every ``Name: <integer>`` line of an ImgEdit answer, in order (its step1 script's rule)."""
    return {name.strip(): int(value) for name, value in _NAMED_SCORE.findall(text or "")}


__all__ = [
    "OFFICIAL_METRICS", "OFFICIAL_PROMPTS", "PINNED", "Pinned", "SCHEMES", "check_scheme", "parse_final_score", "parse_imgedit_scores",
    "parse_score_list", "protocol_label", "read_constants", "read_imgedit_prompts", "read_rise_prompts",
    "read_viescore_prompts", "rise_aggregate", "rise_queries", "viescore_queries",
]
