"""EditThinker's data pipeline (paper Sec. 4) on ShapeEdit: `refine thinker data --config ...`.

Example (two stream cases, one fast editor, the oracle expert):
    >>> import tempfile
    >>> from refine.thinker.data import ThinkerDataConfig, build, generate
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     config = ThinkerDataConfig(output_dir=folder, cases=2, progress=False,
    ...                                editors=[{"name": "perfect", "factory": "refine.thinker.data:TargetEditor"}])
    ...     _ = generate(config)
    ...     summary = build(config)
    >>> summary["trajectories"], summary["kept"], summary["splits"]["sft"]["samples"]
    (2, 2, 2)

Two stages, each one function and one CLI stage:

1. `generate(config)`: trajectory generation (Sec. 4.1). The expert thinker (`thinker`:
   `expert`, ShapeEdit's oracle `ShapeExpertThinker`, or `vlm:URL#model` with the expert prompt,
   e.g. GPT-4.1) runs the Think-while-Edit loop with every editor of `editors` on `cases` cases of
   ShapeEdit's training stream (`refine.shapes.data.stream_case`: never a case of any split), once
   per seed of the editor. Only the expert's stop flag or `max_turns` ends a trajectory (no score
   threshold: the expert's scores are not used), and `vary_seed` re-samples the editor each turn.
   Each editor's trajectories go to `output_dir/traces/<editor name>/` (`TraceWriter` layout); an
   editor whose trace is complete is skipped, an interrupted run continues, and a run with other
   cases, seeds or editor settings in the same folder is refused (`plan.json` beside the trace).
2. `build(config)`: the scorer (`ShapesJudgeScorer`, the exact judge) scores every edit, then
   the rules of `refine.thinker.filters` run in order: filter, truncate at the best edit, SFT/RL
   split by score variance, unroll into samples (terminal samples per `terminal`), balance by
   task and score bin. The result is `output_dir/dataset` (a `datasets.DatasetDict` with splits
   `sft` and `rl` (an empty one left out) in TRL's conversational format, `refine.thinker.trl_rows`) and
   `output_dir/summary.json` (every count, the threshold, the score distributions).

Editors (`EditorSpec`): the bundled ShapeEdit editor (`backbone: shapes`, or `shapes:PATH` for
another checkpoint) at any step count, guidance and sampler, or any editor factory by import path
(`factory: pkg.module:make`). Weaker editors are the bundled one with few steps and no guidance.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any, Literal, Sequence

from datasets import DatasetDict
from pydantic import Field, field_validator, model_validator

from refine.config import RefineConfig
from refine.errors import ConfigError
from refine.registry import import_object
from refine.thinker.config import ThinkerConfig, build_thinker
from refine.thinker.filters import (
    DEFAULT_SCORE_BINS,
    Sample,
    balance,
    cell_counts,
    keeps,
    score_variance,
    split_by_variance,
    truncate,
    unroll,
)
from refine.thinker.loop import LoopConfig, ThinkWhileEdit
from refine.thinker.prompts import get_prompts
from refine.thinker.traces import TraceWriter, read_requests
from refine.thinker.trajectories import ShapesJudgeScorer, Trajectory, fill_scores, load_trajectories
from refine.thinker.trl_rows import samples_to_dataset
from refine.types import EditResult

# Seeds of different trajectory repeats are this far apart, so (repeat, case) never share a seed.
SEED_STRIDE = 100_003


class EditorSpec(RefineConfig):
    """One editor the expert works with."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="Names its trace folder and the `editor` column.")
    backbone: str = Field("shapes", description="'shapes' (the bundled ShapeEdit editor) or 'shapes:PATH' (another checkpoint).")
    steps: int | None = Field(None, ge=1, description="Sampling steps (None: the editor's default).")
    guidance: float | None = Field(None, ge=0, description="CFG scale (None: the backbone's default; 1 turns CFG off).")
    sampler: str = Field("euler", description="euler | dpm | sde.")
    seeds: list[int] = Field([0], min_length=1, description=f"One trajectory per case per seed; request seed = seed * {SEED_STRIDE} + case index.")
    factory: str | None = Field(None, description="Import path of a callable returning an Editor; replaces backbone/steps/guidance/sampler.")
    batch_size: int = Field(16, ge=1, description="Transformer items per forward pass.")

    @field_validator("backbone")
    @classmethod
    def _check_backbone(cls, value: str) -> str:
        if value != "shapes" and not value.startswith("shapes:"):
            raise ValueError(f"backbone {value!r}: use 'shapes' or 'shapes:PATH'; for any other editor give factory: pkg.module:make")
        return value


class ThinkerDataConfig(RefineConfig):
    """Settings of `refine thinker data` (generation and building; see the module docstring)."""

    output_dir: str = Field(..., description="Where traces/, dataset/ and summary.json go.")
    thinker: str = Field("expert", description="The expert: 'expert' (ShapeEdit's oracle) or 'vlm:URL#model' (e.g. GPT-4.1).")
    prompt: Literal["thinker", "expert"] = Field("expert", description="Prompt set of a VLM expert (the expert prompt: a stop flag, no scores).")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="Environment variable holding a VLM expert's API key.")
    sample_prompts: Literal["thinker", "thinker-brief"] = Field(
        "thinker", description="The prompt set the training samples are written with; serve the trained thinker with the same "
        "(`prompt:` of the thinker refiner). thinker-brief: a few lines, the user's instruction last (a small model).")
    expert_critique: Literal["full", "brief"] = Field(
        "full", description="ShapeEdit's expert's reasoning (`ThinkerConfig.expert_critique`): the judge's whole breakdown "
        "(full) or the request made concrete plus at most three failed checks (brief)")
    stream_seed: int = Field(31, description="ShapeEdit training stream seed (cases train-{seed}-{n}; never a split's case).")
    cases: int = Field(200, ge=1, description="Stream cases; each gives one trajectory per editor per seed.")
    indirect_fraction: float = Field(0.5, ge=0, le=1, description="Share of indirect phrasings among the stream's cases.")
    categories: list[str] | None = Field(None, description="Only these ShapeEdit categories (None: all).")
    editors: list[EditorSpec] = Field(
        default_factory=lambda: [EditorSpec(name="bundled", seeds=[0, 1]), EditorSpec(name="bundled-8", steps=8),
                                 EditorSpec(name="weak-3", steps=3, guidance=1.0)],
        min_length=1,
        description="The editors the expert works with.",
    )
    max_turns: int = Field(5, ge=1, description="N, the most edits per trajectory (paper App. C: 5).")
    vary_seed: bool = Field(True, description="Each turn re-samples the editor (seed + t - 1), as well as re-instructing it.")
    requests_per_call: int = Field(32, ge=1, description="Requests run through the loop together (one editor call per turn).")
    scorer: str = Field("shapes-judge", description="'shapes-judge' (the exact judge, an oracle) or an import path of a Scorer factory.")
    single_stopped: bool = Field(True, description="Keep a one-edit trajectory when the expert said stop on it (see filters.keeps).")
    terminal: Literal["stop", "none", "always"] = Field("stop", description="Terminal sample of the best edit (see filters.unroll).")
    variance_threshold: float = Field(
        4.0, ge=0, description="Trajectories with Var(S_1..S_k*) above this go to RL (scores 0-10; 4.0 = a 2-point std)."
    )
    balance_cap: int | Literal["median", "none"] = Field(
        "median", description="Most samples per (task, score bin) cell: a number, 'median' (of the cell sizes) or 'none' (no cap)."
    )
    score_bins: list[float] = Field(list(DEFAULT_SCORE_BINS), description="Semantic score bin edges for balancing.")
    score_decimals: int = Field(1, ge=0, le=4, description="Decimals of the scores in the targets.")
    seed: int = Field(0, description="Seed of the balancing draw.")
    num_threads: int = Field(1, ge=1, description="torch threads for the editors.")
    progress: bool = Field(True, description="Print one line per finished batch.")

    @field_validator("balance_cap", mode="before")
    @classmethod
    def _check_cap(cls, value: Any) -> Any:
        if isinstance(value, bool):  # YAML reads `off` / `no` as false: say what to write instead
            raise ValueError(f"balance_cap={value!r} (YAML reads off/no/yes as a boolean): write a number, median or none")
        return value

    @model_validator(mode="after")
    def _check(self) -> "ThinkerDataConfig":
        names = [e.name for e in self.editors]
        if len(set(names)) != len(names):
            raise ValueError(f"editor names must differ (they name the trace folders): {names}")
        if sorted(self.score_bins) != self.score_bins:
            raise ValueError(f"score_bins must be increasing, got {self.score_bins}")
        if self.thinker != "expert" and not self.thinker.startswith("vlm:"):
            raise ValueError(f"thinker {self.thinker!r}: use 'expert' or 'vlm:URL#model'")
        return self


class TargetEditor:
    """An editor that returns the case's exact target (an oracle editor for tests and doctests)."""

    name = "target"

    def edit(self, requests):
        from refine.shapes.data import ShapeCase

        return [EditResult(ShapeCase.from_dict(r.meta["shapes_case"]).target_image, r.instruction) for r in requests]


def build_editor(spec: EditorSpec):
    """The `Editor` a spec names (models load here)."""
    if spec.factory is not None:
        return import_object(spec.factory)()
    from refine.backbones.shapes import load_shapes_backbone
    from refine.rollout.flow_editor import FlowEditor

    path = spec.backbone.partition(":")[2] or None
    return FlowEditor(load_shapes_backbone(path), spec.sampler, steps=spec.steps, guidance=spec.guidance, batch_size=spec.batch_size)


def stream_cases(config: ThinkerDataConfig) -> list:
    """The config's training-stream cases (never a case of shapes-bench, -mt, -val or -mt-val)."""
    from refine.shapes.data import stream_case

    return [stream_case(config.stream_seed, i, indirect_fraction=config.indirect_fraction, categories=config.categories)
            for i in range(config.cases)]


def generate(config: ThinkerDataConfig) -> dict[str, int]:
    """Stage 1: run the expert with every editor; {editor name: trajectories written}."""
    import torch

    torch.set_num_threads(config.num_threads)
    thinker = build_thinker(ThinkerConfig(thinker=config.thinker, prompt=config.prompt, api_key_env=config.api_key_env,
                                          expert_critique=config.expert_critique))
    loop = LoopConfig(max_turns=config.max_turns, score_threshold=None, vary_seed=config.vary_seed, early_stop=True)
    cases = stream_cases(config)
    written = {}
    for spec in config.editors:
        root = Path(config.output_dir) / "traces" / spec.name
        requests = [case.to_request(seed=seed * SEED_STRIDE + i) for seed in spec.seeds for i, case in enumerate(cases)]
        _check_plan(root, spec, [(r.meta["case_id"], r.seed) for r in requests])
        done = len(read_requests(root)) if (root / "requests.jsonl").is_file() else 0
        if done >= len(requests):
            written[spec.name] = done
            continue
        editor = build_editor(spec)
        with TraceWriter(root, thinker_name=thinker.name) as trace:
            refined = ThinkWhileEdit(thinker, loop, observers=[trace])(editor)
            for start in range(done, len(requests), config.requests_per_call):
                refined.edit(requests[start:start + config.requests_per_call])
                if config.progress:
                    print(f"{spec.name}: {min(start + config.requests_per_call, len(requests))}/{len(requests)} trajectories", flush=True)
        written[spec.name] = len(requests)
    return written


def _check_plan(root: Path, spec: EditorSpec, plan: list[tuple[str, int]]) -> None:
    """Write (or check) the editor's plan: which (case, seed) trajectory i is, and the editor's settings.

    A trace continues only under the plan that began it: request i of a longer or reordered plan
    would be another case, and the trace would silently mix two datasets.
    """
    wanted = {"editor": spec.model_dump(), "requests": [list(item) for item in plan]}
    path = root / "plan.json"
    if path.is_file():
        if json.loads(path.read_text()) != wanted:
            raise ConfigError(f"{root} was generated with other cases, seeds or editor settings; "
                              "use a new output_dir (or remove that editor's trace folder)")
        return
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(wanted) + "\n")


def build_scorer(spec: str):
    if spec == "shapes-judge":
        return ShapesJudgeScorer()
    if ":" not in spec:
        raise ConfigError(f"scorer {spec!r}: use 'shapes-judge' or an import path 'pkg.module:factory'")
    return import_object(spec)()


def load_all(config: ThinkerDataConfig) -> list[Trajectory]:
    """Every generated trajectory of every editor, in editor order."""
    trajectories = []
    for spec in config.editors:
        root = Path(config.output_dir) / "traces" / spec.name
        if not (root / "requests.jsonl").is_file():
            raise ConfigError(f"{root} holds no trace; run the generate stage first (refine thinker data --stage generate)")
        trajectories += load_trajectories(root, editor=spec.name)
    return trajectories


def select(trajectories: Sequence[Trajectory], config: ThinkerDataConfig) -> dict[str, Any]:
    """Filter, truncate, split, unroll and balance scored trajectories; the samples and every count."""
    nonempty = [t for t in trajectories if t.steps]
    kept = [t for t in nonempty if keeps(t.scores(), single_stopped=config.single_stopped and t.stopped)]
    truncated = [truncate(t) for t in kept]
    sft_trajectories, rl_trajectories = split_by_variance(truncated, config.variance_threshold)
    out: dict[str, Any] = {"kept": kept, "truncated": truncated, "splits": {}}
    for name, group in (("sft", sft_trajectories), ("rl", rl_trajectories)):
        unrolled = [s for t in group for s in unroll(t, config.terminal)]
        balanced = balance(unrolled, config.balance_cap, config.score_bins, config.seed)
        out["splits"][name] = {"trajectories": group, "unrolled": unrolled, "samples": balanced}
    return out


def build(config: ThinkerDataConfig) -> dict[str, Any]:
    """Stage 2: score, select, write `dataset/` and `summary.json`; returns the summary."""
    trajectories = fill_scores(load_all(config), build_scorer(config.scorer))
    chosen = select(trajectories, config)
    prompts = get_prompts(config.sample_prompts)
    datasets = {name: samples_to_dataset(part["samples"], prompts, decimals=config.score_decimals)
                for name, part in chosen["splits"].items()}
    output = Path(config.output_dir)
    # An empty split is left out: datasets (5.2) writes an empty dataset that it cannot read back.
    DatasetDict({name: d for name, d in datasets.items() if len(d)}).save_to_disk(str(output / "dataset"))
    summary = summarize(trajectories, chosen, config)
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def summarize(trajectories: Sequence[Trajectory], chosen: dict[str, Any], config: ThinkerDataConfig) -> dict[str, Any]:
    variances = [score_variance(t.scores()) for t in chosen["truncated"]]
    steps_before = sum(len(t.steps) for t in chosen["kept"])
    steps_after = sum(len(t.steps) for t in chosen["truncated"])
    summary: dict[str, Any] = {
        "trajectories": len(trajectories),
        "kept": len(chosen["kept"]),
        "discarded": len(trajectories) - len(chosen["kept"]),
        "edits_dropped_by_truncation": steps_before - steps_after,
        "variance_threshold": config.variance_threshold,
        "variance_quantiles": _quantiles(variances),
        "first_score_mean": _mean([t.scores()[0] for t in trajectories if t.steps]),
        "best_score_mean": _mean([max(t.scores()) for t in trajectories if t.steps]),
        "by_editor": {},
        "splits": {},
    }
    for spec in config.editors:
        mine = [t for t in trajectories if t.editor == spec.name and t.steps]
        summary["by_editor"][spec.name] = {
            "trajectories": len(mine),
            "kept": sum(t.editor == spec.name for t in chosen["kept"]),
            "first_score_mean": _mean([t.scores()[0] for t in mine]),
            "best_score_mean": _mean([max(t.scores()) for t in mine]),
        }
    for name, part in chosen["splits"].items():
        samples: list[Sample] = part["samples"]
        summary["splits"][name] = {
            "trajectories": len(part["trajectories"]),
            "unrolled": len(part["unrolled"]),
            "samples": len(samples),
            "terminal": sum(s.terminal for s in samples),
            "semantic_mean": _mean([s.semantic for s in samples]),
            "cells": cell_counts(samples, config.score_bins),
        }
    return summary


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def _quantiles(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, math.floor(q * len(ordered)))]  # noqa: E731
    return {f"q{int(q * 100)}": round(pick(q), 4) for q in (0.1, 0.25, 0.5, 0.75, 0.9)} | {"share_zero": round(sum(v == 0 for v in values) / len(values), 4)}
