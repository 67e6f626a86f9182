"""Best-of-n SFT rows for think-before-edit: the thinker's own rewrites, or the user's instruction kept, whichever edits best.

Example (the choice rule alone: mean R_edit per candidate, keeping the instruction scores 0):
    >>> from refine.thinker.best_of_rows import choose
    >>> choose({"keep": 0.0, "make the circle blue": 0.12, "make the square blue": -0.3}, margin=0.0)
    'make the circle blue'
    >>> choose({"keep": 0.0, "make the circle blue": 0.01}, margin=0.02)
    'keep'

`refine thinker best-of --config thinker_data/shapes-best-of thinker=refine/assets/shapes-thinker`
runs a rewrite-only thinker over training-stream cases (the source alone, as
`first_turn_rows` shows it): its greedy rewrite and `samples` sampled ones. Each distinct
rewrite is edited with `seeds` editor seeds and scored by `EditReward` against the plain edit
with the same seed (R_edit, the gain `benchmarks/thinker_learned.py` reports); the user's
instruction kept scores exactly 0. The row's target (`label`):
- `gain`: the candidate with the highest mean gain, or keep when no rewrite beats keeping by more
  than `margin` (`ties: drop` leaves out the cases where neither clearly won);
- `right`: the greedy rewrite when it is the training case's canonical direct phrasing, else keep
  (abstention labels: "rewrite only what you get right"; no editor needed, `seeds: 0`).
A kept row's target is `KEEP_REPLY` ("keep", one token, which `VLMThinker` and `EditReward` read as
the instruction as it is), or the instruction copied (`keep_reply: copy`).

Why (not in the EditThinker paper, which goes SFT then GRPO): think-before-edit GRPO on ShapeEdit
did not improve over SFT (benchmarks/RESULTS.md, stop 41), and its curves said why: SFT never kept
an indirect instruction, so keeping it was sampled in 1-5% of rollouts and RL could not find the
safe action; and a wrong rewrite costs the editor more than a right one gains. Here keeping is
always a candidate, so SFT on these rows teaches the model to leave alone what it rewrites badly
(rejection-sampling fine-tuning: RAFT, Dong et al. 2023; ReST, Gulcehre et al. 2023). With `gain`
the targets are the model's own outputs or keep; the judge reads the training case's ground truth
for the reward only, as in GRPO; `right` reads the training case's canonical phrasing, as the
rewrite SFT stages do. Measured on shapes-val in benchmarks/RESULTS.md, "Rewrite or keep" (stop 42).

Resumable: each finished chunk of cases is appended to `output_dir/candidates.jsonl` and skipped
on a rerun; `output_dir/dataset` (split sft, TRL's conversational prompt-completion layout) and
`summary.json` are written at the end. Train with `refine train thinker --stage sft
dataset=<output_dir>/dataset prompt=shapes-rewrite`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from datasets import Dataset, DatasetDict
from pydantic import Field, model_validator
from rich.progress import Progress

from refine.config import RefineConfig
from refine.errors import ConfigError
from refine.registry import registry
from refine.shapes.data import ShapeCase, stream_case
from refine.thinker.data import EditorSpec, build_editor
from refine.thinker.grpo_rewards import EditReward, answer_instruction
from refine.thinker.prompts import PROMPT_NAMES, get_prompts
from refine.thinker.first_turn_rows import first_turn_prompt, first_turn_request
from refine.thinker.vlm import KEEP_REPLY, VLMThinker

KEEP = "keep"  # the candidate "leave the user's instruction as it is"


class BestOfConfig(RefineConfig):
    """Settings of `refine thinker best-of` (see the module docstring)."""

    output_dir: str = Field(..., description="Where candidates.jsonl, dataset/ (split sft) and summary.json go.")
    thinker: str = Field(..., description="The rewrite-only thinker whose rewrites are scored: a checkpoint folder or http(s)://host/v1[#model].")
    prompt: Literal[PROMPT_NAMES] = Field("shapes-rewrite", description="The thinker's prompt set (rewrite-only: the reply is the instruction).")
    stream_seed: int = Field(61, description="ShapeEdit training stream seed (cases train-{seed}-{n}; never a split's case).")
    cases: int = Field(2000, ge=1, description="Stream cases, one row each.")
    indirect_fraction: float = Field(0.8, ge=0, le=1, description="Share of indirect phrasings.")
    categories: Optional[list[str]] = Field(None, description="Only these ShapeEdit categories (None: all).")
    samples: int = Field(1, ge=0, description="Sampled rewrites per case besides the greedy one.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of those rewrites.")
    max_new_tokens: int = Field(40, ge=8, description="Most tokens per rewrite.")
    seeds: int = Field(4, ge=0, description="Editor seeds each candidate is edited with; the mean gain over them picks (one seed is mostly "
                                         "editor noise). 0: no editor at all (label right only; the gains are not measured).")
    margin: float = Field(0.0, ge=0, description="A rewrite is the target only when its mean gain exceeds this; otherwise the instruction is kept.")
    ties: Literal["keep", "drop"] = Field(
        "keep", description="A case whose best rewrite gains within [-margin, margin]: keep (target the instruction) or drop (no row: "
                            "the editor did about as well either way, so the case says nothing about when to rewrite).")
    label: Literal["gain", "right"] = Field(
        "gain", description="How a row's target is chosen: gain (the candidate with the best mean R_edit, or keep) or right (the greedy "
                            "rewrite when it is the training case's canonical direct phrasing, else keep: abstention labels, free of editor noise).")
    keep_reply: Literal["token", "copy"] = Field(
        "token", description="What a kept row's target says: token (`KEEP_REPLY`, one token the reader maps to the instruction) "
                             "or copy (the instruction word for word: a skill a rewrite model lacks, measured worse in stop 42).")
    judge: Any = Field("shapes_overall", description="E of R_edit, a rewards-layer reward spec with scores in [0, 1] (shapes_overall reads the training case's ground truth).")
    editor: EditorSpec = Field(default_factory=lambda: EditorSpec(name="bundled-8", steps=8), description="The editor the candidates are run with.")
    chunk: int = Field(64, ge=1, description="Cases per thinker/editor batch (and per line group of candidates.jsonl).")
    num_threads: int = Field(2, ge=1, description="torch threads on CPU.")
    progress: bool = Field(True, description="A progress bar over the cases.")


    @model_validator(mode="after")
    def _gains_need_edits(self) -> "BestOfConfig":
        if self.label == "gain" and self.seeds == 0:
            raise ValueError("label=gain picks by the mean R_edit over editor seeds: set seeds >= 1 (or label=right)")
        return self


def choose(gains: dict[str, float], margin: float = 0.0) -> str:
    """The best candidate by mean gain; `KEEP` unless a rewrite's gain exceeds `margin` (and keeping's 0)."""
    best = max((c for c in gains if c != KEEP), key=lambda c: gains[c], default=None)
    return best if best is not None and gains[best] > max(margin, gains.get(KEEP, 0.0)) else KEEP


def score_candidates(reward: EditReward, cases: list, candidates: list[list[str]], seed_base: list[int]) -> list[dict[str, float]]:
    """Mean R_edit of each case's candidates over the editor seeds seed_base[s] + i (KEEP scores 0)."""
    flat = [(i, c) for i, cands in enumerate(candidates) for c in cands if c != KEEP]
    totals = [dict.fromkeys(cands, 0.0) for cands in candidates]
    for base in seed_base:
        rewards = reward(
            completions=[c for _, c in flat], images=[[cases[i].source_image] for i, _ in flat],
            instruction=[cases[i].instruction for i, _ in flat],
            meta=[cases[i].to_request(seed=base + i).meta for i, _ in flat], seed=[base + i for i, _ in flat],
            trajectory_id=[cases[i].id for i, _ in flat], step=[0] * len(flat))
        for (i, c), r in zip(flat, rewards, strict=True):
            totals[i][c] += (reward.unusable if r is None else r) / len(seed_base)
    return totals


def _case(config: BestOfConfig, index: int) -> ShapeCase:
    return stream_case(config.stream_seed, index, indirect_fraction=config.indirect_fraction, categories=config.categories)


def _chunk_results(config: BestOfConfig, start: int, greedy: VLMThinker, sampler: VLMThinker, reward: Optional[EditReward]) -> list[dict[str, Any]]:
    cases = [_case(config, i) for i in range(start, min(start + config.chunk, config.cases))]
    requests = [first_turn_request(c) for c in cases]
    replies = [greedy.think(requests)] + [sampler.think(requests) for _ in range(config.samples)]
    candidates, rewrites = [], []
    for i, case in enumerate(cases):
        said = [t[i].instruction if t[i].error is None else None for t in replies]  # a thought without error has a usable instruction
        usable = [s for s in said if s is not None and s.strip() != case.instruction.strip()]
        candidates.append([KEEP, *dict.fromkeys(usable)])
        rewrites.append(said)
    seed_base = [start + s * config.cases for s in range(config.seeds)]
    gains = score_candidates(reward, cases, candidates, seed_base) if seed_base else [{KEEP: 0.0} for _ in cases]
    out = []
    for i, case in enumerate(cases):
        greedy_said = rewrites[i][0]
        unchanged = greedy_said is not None and greedy_said.strip() == case.instruction.strip()
        greedy_gain = gains[i].get(greedy_said, 0.0 if unchanged else reward.unusable) if seed_base else None
        out.append({"index": start + i, "case": case.id, "category": case.category, "instruction": case.instruction,
                    "direct": case.direct_instruction,  # the canonical phrasing: label "right" only, never shown to the model
                    "rewrites": rewrites[i], "gains": gains[i], "greedy_gain": greedy_gain})
    return out


def target_of(result: dict[str, Any], config: BestOfConfig) -> Optional[str]:
    """The row's target (`KEEP` or a rewrite) among keep, the greedy rewrite and the first `samples` sampled ones; None drops the row.

    Chosen when the rows are written, from the gains in candidates.jsonl: label, margin, ties and
    samples (up to the log's) can change on a finished log without running the thinker or the editor
    again. `label="right"` reads `direct`, the training case's canonical direct phrasing.
    """
    if config.label == "right":
        greedy = result["rewrites"][0]
        return greedy if greedy is not None and greedy == result["direct"] and greedy != result["instruction"] else KEEP
    considered = {r for r in result["rewrites"][: 1 + config.samples] if r is not None}
    gains = {c: g for c, g in result["gains"].items() if c == KEEP or c in considered}
    target = choose(gains, config.margin)
    best_rewrite = max((g for c, g in gains.items() if c != KEEP), default=None)
    if config.ties == "drop" and target == KEEP and (best_rewrite is None or best_rewrite >= -config.margin):
        return None  # no rewrite, or none clearly worse than keeping: no evidence either way
    return target


def _rows(config: BestOfConfig, results: list[dict[str, Any]], targets: list[Optional[str]]) -> Dataset:
    prompts = get_prompts(config.prompt)
    rows = []
    for r, target in zip(results, targets, strict=True):
        if target is None:
            continue
        case = _case(config, r["index"])
        prompt, images = first_turn_prompt(prompts, case)
        text = (KEEP_REPLY if config.keep_reply == "token" else case.instruction) if target == KEEP else target
        rows.append({"prompt": prompt, "completion": [{"role": "assistant", "content": [{"type": "text", "text": text}]}],
                     "images": images, "task": case.category, "choice": "keep" if target == KEEP else "rewrite",
                     "gain": r["gains"].get(target, math.nan), "trajectory_id": case.id})
    return Dataset.from_list(rows)


def write_best_of_rows(config: BestOfConfig) -> dict[str, Any]:
    """Score the candidates (resuming `candidates.jsonl`), then write dataset/ (split sft) and summary.json."""
    torch.set_num_threads(config.num_threads)
    root = Path(config.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    log = root / "candidates.jsonl"
    results = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    other = next((r["case"] for r in results if r["case"] != f"train-{config.stream_seed}-{r['index']}"), None)
    if other is not None:  # resuming someone else's log would mix two streams' cases under one index
        raise ConfigError(f"{log} holds cases of another stream ({other}); stream_seed={config.stream_seed}: use a new output_dir")
    done = {r["index"] for r in results}
    todo = [s for s in range(0, config.cases, config.chunk) if s not in done]
    if todo:
        greedy = VLMThinker.from_spec(config.thinker, prompts=config.prompt, max_new_tokens=config.max_new_tokens)
        sampler = VLMThinker(greedy.backend, prompts=config.prompt, max_new_tokens=config.max_new_tokens, temperature=config.temperature)
        # no editor or judge to load when nothing is edited (seeds=0)
        reward = EditReward(build_editor(config.editor), registry.build("reward", config.judge), answer_of=answer_instruction) \
            if config.seeds else None
        with Progress(disable=not config.progress) as bar:
            task = bar.add_task("best-of rows", total=config.cases, completed=len(done))
            for start in todo:
                chunk = _chunk_results(config, start, greedy, sampler, reward)
                with log.open("a") as f:  # one write per chunk: a killed run loses at most this chunk
                    f.write("".join(json.dumps(r) + "\n" for r in chunk))
                results.extend(chunk)
                bar.advance(task, len(chunk))
    results = sorted((r for r in results if r["index"] < config.cases), key=lambda r: r["index"])
    targets = [target_of(r, config) for r in results]  # once: the rows and the summary read the same choices
    DatasetDict({"sft": _rows(config, results, targets)}).save_to_disk(str(root / "dataset"))
    summary = _summary(config, results, targets)
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _mean(values: list[Optional[float]]) -> Optional[float]:
    """The mean of the measured values (None where nothing was edited: seeds=0)."""
    measured = [v for v in values if v is not None]
    return round(sum(measured) / len(measured), 4) if measured else None


def _summary(config: BestOfConfig, results: list[dict[str, Any]], targets: list[Optional[str]]) -> dict[str, Any]:
    """Rows written, and by category: the share kept and dropped, the greedy rewrite's and the targets' mean gain."""
    def part(pairs: list[tuple[dict[str, Any], Optional[str]]]) -> dict[str, Any]:
        rs = [r for r, _ in pairs]
        chosen = [(r, t) for r, t in pairs if t is not None]
        n = len(rs)
        return {"cases": n, "rows": len(chosen), "kept": round(sum(t == KEEP for _, t in chosen) / n, 3),
                "dropped": round((n - len(chosen)) / n, 3), "greedy_is_target": round(sum(t == r["rewrites"][0] for r, t in chosen) / n, 3),
                "greedy_gain": _mean([r["greedy_gain"] for r in rs]), "target_gain": _mean([r["gains"].get(t) for r, t in chosen])}

    settings = {"thinker": config.thinker, "stream_seed": config.stream_seed, "samples": config.samples, "temperature": config.temperature,
                "seeds": config.seeds, "label": config.label, "margin": config.margin, "ties": config.ties, "keep_reply": config.keep_reply}
    if not results:
        return {"cases": 0, "rows": 0, **settings}
    pairs = list(zip(results, targets, strict=True))
    categories = sorted({r["category"] for r in results})
    return {**part(pairs), **settings,
            "by_category": {c: part([(r, t) for r, t in pairs if r["category"] == c]) for c in categories}}
