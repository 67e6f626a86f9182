"""HF `datasets` of seeing and judge examples for the ShapeEdit VLM, drawn from the training stream only.

Example:
    >>> from refine.shapes.vlm.data import VLMDataConfig, build_dataset
    >>> dataset = build_dataset(VLMDataConfig(cases=2, seeing_per_case=1, judge_per_case=1, editor=False))
    >>> len(dataset), sorted(dataset.column_names)
    (4, ['case_id', 'completion', 'images', 'overall', 'prompt', 'task'])

Cases come from `refine.shapes.data.training_stream(seed)`, which never yields a case (source and
target) of any split, so nothing here is a shapes-val or shapes-bench case. Per case: seeing
examples (`tasks.seeing_examples`) and judge examples on the outputs of the bundled editor
(`refine.backbones.shapes.load_shapes_backbone`, sampled by a `FlowEditor` with the case's own seed)
and on other outputs (`refine.shapes.candidates.candidate_outputs`: target, degraded target, source, a wrong edit,
noise), so the exact judge's O spreads over [0, 1].
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any, Optional

import torch
from datasets import Dataset, concatenate_datasets, load_from_disk
from pydantic import Field, field_validator, model_validator
from tqdm.auto import tqdm

from refine.backbones.shapes import load_shapes_backbone
from refine.config import RefineConfig
from refine.errors import InputError
from refine.rollout.flow_editor import FlowEditor
from refine.shapes.data import ShapeCase, case_key, make_case, reserved_case_keys, seeded_rng, training_stream
from refine.shapes.edits import feasible_categories
from refine.shapes.candidates import candidate_outputs
from refine.shapes.world import random_scene
from refine.shapes.vlm.tasks import (JUDGE_KINDS, QUESTIONS, REASONED_KINDS, REWRITE_REASONING, bare_score_example, judge_example,
                                    output_grid_example, seeing_examples)


class VLMDataConfig(RefineConfig):
    """Which examples to generate (all from `training_stream(seed)`)."""

    seed: int = Field(23, description="training stream seed (cases train-{seed}-{n})")
    cases: int = Field(1000, ge=0, description="stream cases to draw (0: only `restage_from`'s rows)")
    indirect_fraction: float = Field(
        0.3, ge=0, le=1, description="share of stream cases phrased indirectly (riddles, relations); a stage that teaches "
        "the `rewrite` seeing task raises it so most of its answers differ from the question's instruction")
    seeing_per_case: int = Field(2, ge=0, description="seeing examples per case (describe, position, colour, count, difference)")
    seeing_tasks: Optional[dict[str, float]] = Field(
        None, description="weights of the seeing task kinds (describe, at_position, color, background, count, difference, "
        "grid: every cell named, where: the cell of a named object, beside: the cell next to it, pair_at: one cell of one of two images, not_in: the objects of one of two images the other lacks (tasks._not_in_example), lookup: the cells as text, then the cell of each object named by what it is, find: the same without the cells, each cell after its name and key (tasks.found_line), rewrite: the instruction in its direct "
        "phrasing, rewrite_think / rewrite_grid / rewrite_locate / rewrite_scan / rewrite_scan_read / rewrite_lookup / rewrite_find: the scene / every cell / the named objects looked up (tasks.REWRITE_REASONING) in <think>, then that rewrite in <answer>); None: the first six uniformly. A seeing stage that must teach the tower the cells weights grid up "
        "(see refine/shapes/vlm/README.md)")
    degrade_rate: float = Field(0.3, ge=0, le=1, description="share of seeing images blurred / noised like an editor's output")
    question_first: bool = Field(
        False, description="put the user's text before the images in every row (`text_first`): a causal language model "
        "then reads the image already knowing what it is asked to find (stop 49)")
    empty_reasoning_keep: float = Field(
        1.0, ge=0, le=1, description="share kept of the rewrite-with-reasoning examples whose <think> is empty (the "
        "instruction names nothing to find in the scene: riddles such as 'the shape with three sides'). Below 1 spends "
        "more steps on the lookups (rewrite_scan_read: 60% of stream cases have nothing to find at indirect_fraction 0.8); "
        "the dropped examples are not replaced, so raise `cases` to keep the dataset's size")
    judge_per_case: int = Field(2, ge=0, description="judge examples per case on outputs other than the editor's")
    editor: bool = Field(True, description="also judge the bundled editor's output of every case (one example per case)")
    editor_samples: int = Field(
        1, ge=1, description="bundled-editor outputs judged per case, each from another seed: edits of the same input "
        "that differ only in how well the editor did, the pairs a judge must order (Edit-R1's pairwise accuracy)")
    editor_steps: int | None = Field(None, ge=1, description="editor sampling steps (None: the editor's default)")
    near_misses: bool = Field(
        False, description="also judge near misses of the target (an edit of the case's category with other arguments, "
        "the edit plus an unwanted change, half a hybrid edit): outputs that only the image tells apart from the target "
        "under the same prompt, so the judge cannot score them from the instruction")
    output_grids: int = Field(
        0, ge=0, description="per case, this many of the bundled editor's outputs also asked \"What is in each cell?\", "
        "answered with what the exact parser reads in them, stray marks included (`tasks.describe_parsed_grid`): the "
        "judge reads an editor's output the way the exact judge's labels do")
    contrast: bool = Field(
        False, description="also judge the case's target (O = 1) and its unchanged source (O ~ 0) under the case's own "
        "prompt, every case: the instruction alone then says nothing about the label, so the score must come from the "
        "output image (judges trained without it scored a perfect edit, the source and noise alike)")
    contrast_sparse: int = Field(
        0, ge=0, description="extra cases whose source holds 0 to 3 objects (uniformly; `sparse_cases`), each judged on "
        "its target and on its untouched source only: a curriculum for `contrast` (stop 57). With an empty source the "
        "label is whether the second image holds anything, which one image tells; each object the two share then asks "
        "the score to discount what the first image already holds")
    judge_kinds: dict[str, float] = Field(
        default_factory=lambda: {"score": 0.7, "yesno": 0.2, "score_cot": 0.1},
        description="weights of the judge prompt kinds among judge examples: score, yesno, score_cot (the exact judge's failed "
        "checks, then the score), score_read (the CoT prompt answered by `tasks.read_reasoning`: the named objects found, the "
        "edit said directly, each checked cell read in the output, then the score)",
    )

    restage_from: list[str] = Field(
        default_factory=list, description="dataset folders of earlier stages (their output_dir/dataset) whose rows this "
        "dataset takes too, with no editor sampled again: its judge rows, each reasoning-first one asked again with the "
        "bare score prompt at the share `restage_bare` (`tasks.bare_score_example`), and its other rows at the share "
        "`restage_other`")
    restage_bare: float = Field(0.8, ge=0, le=1, description="share of `restage_from`'s reasoning-first judge rows asked "
                                "again with the bare score prompt (the rest are kept as they are)")
    restage_other: float = Field(0.3, ge=0, le=1, description="share of `restage_from`'s seeing rows kept")

    @model_validator(mode="after")
    def _some_rows(self) -> "VLMDataConfig":
        if self.cases == 0 and not self.restage_from:
            raise ValueError("cases=0 needs restage_from: the dataset would be empty")
        return self

    @field_validator("seeing_tasks")
    @classmethod
    def _known_seeing_tasks(cls, tasks: Optional[dict[str, float]]) -> Optional[dict[str, float]]:
        unknown = set(tasks or ()) - set(QUESTIONS)
        if unknown:
            raise ValueError(f"unknown seeing tasks {sorted(unknown)}; use {', '.join(QUESTIONS)}")
        if tasks is not None and (min(tasks.values(), default=0) < 0 or sum(tasks.values()) <= 0):
            raise ValueError("seeing_tasks weights must be >= 0 with a positive sum, e.g. {grid: 0.5, describe: 0.2, count: 0.1}")
        return tasks


def build_dataset(config: VLMDataConfig, progress: bool = False) -> Dataset:
    """All examples of `config` as one `datasets.Dataset` (columns of `tasks` examples)."""
    unknown = set(config.judge_kinds) - set(JUDGE_KINDS)
    if unknown:
        raise ValueError(f"unknown judge kinds {sorted(unknown)}; use {', '.join(JUDGE_KINDS)}")
    rng = random.Random(config.seed)
    kinds, weights = list(config.judge_kinds), list(config.judge_kinds.values())
    cases = list(itertools.islice(training_stream(config.seed, indirect_fraction=config.indirect_fraction), config.cases))
    outputs = (editor_outputs(cases, config.seed, config.editor_samples, config.editor_steps, progress) if config.editor and cases
               else [[] for _ in cases])
    keep_rng = random.Random(f"{config.seed}-keep")   # its own draws, so the examples kept are the ones drawn at keep 1
    rows: list[dict[str, Any]] = []
    for case, edits in tqdm(list(zip(cases, outputs)), desc="examples", disable=not progress):
        rows += [row for row in seeing_examples(case, rng, config.seeing_per_case, config.seeing_tasks, config.degrade_rate)
                 if config.empty_reasoning_keep == 1.0 or not _empty_reasoning(row) or keep_rng.random() < config.empty_reasoning_keep]
        # at least two drawn, as before the near misses, so the presets' datasets stay the same row for row
        candidates = candidate_outputs(case, rng, config.near_misses, k=max(2, config.judge_per_case))[: config.judge_per_case]
        if config.contrast:
            candidates = [("target", case.target_image), ("source", case.source_image)] + candidates
        candidates += [("editor", edited) for edited in edits]
        for source, image in candidates:
            rows.append(judge_example(case, image, rng.choices(kinds, weights)[0], rng, source=source))
        rows += [output_grid_example(case, image) for image in edits[: config.output_grids]]
    for case in sparse_cases(config.seed, config.contrast_sparse, config.indirect_fraction):
        rows += [judge_example(case, image, rng.choices(kinds, weights)[0], rng, source=source)
                 for source, image in (("target", case.target_image), ("source", case.source_image))]
    if config.question_first:
        rows = [text_first(row) for row in rows]
    rng.shuffle(rows)
    if not config.restage_from:
        return Dataset.from_list(rows)
    parts = [Dataset.from_list(rows)] if rows else []
    parts += restaged_rows(config.restage_from, config.restage_bare, config.restage_other, random.Random(config.seed))
    return concatenate_datasets(parts).shuffle(seed=config.seed, keep_in_memory=True)


def sparse_cases(seed: int, count: int, indirect_fraction: float = 0.3) -> list[ShapeCase]:
    """`count` training cases whose sources hold 0, 1, 2 or 3 objects (uniformly), none of them a split's case.

    The edit's category is drawn among those the source allows (on an empty source: add, background or a
    hybrid of the two, phrased directly: an empty scene has nothing to name an object by).

    >>> [len(case.source.objects) for case in sparse_cases(0, 6)]
    [0, 2, 0, 2, 1, 2]
    """
    rng, reserved, cases = seeded_rng("sparse-cases", seed), reserved_case_keys(), []
    while len(cases) < count:
        scene = random_scene(rng, rng.randint(0, 3))
        phrasing = "indirect" if scene.objects and rng.random() < indirect_fraction else "direct"
        try:
            case = make_case(rng, rng.choice(feasible_categories(scene)), phrasing, f"sparse-{seed}-{len(cases)}", scene=scene)
        except InputError:  # no edit of that category and phrasing on this scene: draw another scene
            continue
        if case_key(case) not in reserved:
            cases.append(case)
    return cases


def restaged_rows(folders: list[str], bare: float, other: float, rng: random.Random) -> list[Dataset]:
    """The rows `VLMDataConfig.restage_from` takes from earlier stages' datasets: per folder, the rows kept as they are,
    then the reasoning-first judge rows asked again with the bare score prompt (`tasks.bare_score_example`).

    Judge rows are all kept (the editor outputs are what a stage's CPU went to); a reasoning-first one is asked
    again with the bare prompt with probability `bare`; a seeing row is kept with probability `other`.
    """
    parts = []
    for folder in folders:
        if not (Path(folder) / "dataset_info.json").is_file():
            raise InputError(f"restage_from: {folder} is not a saved dataset (an earlier stage's output_dir/dataset)")
        dataset = load_from_disk(folder)
        kept, asked = [], []
        for index, task in enumerate(dataset["task"]):
            kind = task.split(":")[0].removeprefix("judge_") if task.startswith("judge_") else None
            if kind in REASONED_KINDS:
                (kept if rng.random() < 1 - bare else asked).append(index)
            elif kind is not None or rng.random() < other:
                kept.append(index)
        # in memory: `datasets` would otherwise write its cache files into the earlier stage's folder
        parts += [dataset.select(kept, keep_in_memory=True),
                  dataset.select(asked, keep_in_memory=True).map(bare_score_example, keep_in_memory=True)]
    return parts


def text_first(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its user turn's text before its images: "Where is the red circle?" then the image.

    Why (issue 24, stop 49): with the image first, a causal language model reads the visual tokens before it
    knows the question, so finding a named object takes two hops at the answer: gather the name from the
    question, then match it against the visual tokens (`where` stayed at chance among the occupied cells from
    either initialisation). With the question first, each visual token can attend to the name as it is read.
    Measured: a small transformer on the bundle's visual tokens left chance twice as early in two seeds of three
    (`benchmarks/lookup_order.py`), but the ShapeEdit VLM's `where` was still at chance after 1,250 steps; putting
    the answer right after the name did more (benchmarks/RESULTS.md, "The lookup from the image"). The images keep
    their order among themselves, so `images` needs no change.

    >>> row = {"prompt": [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "Where?"}]}]}
    >>> [part["type"] for part in text_first(row)["prompt"][-1]["content"]]
    ['text', 'image']
    """
    prompt = [dict(turn) for turn in row["prompt"]]
    for turn in prompt:
        if turn["role"] == "user":
            turn["content"] = sorted(turn["content"], key=lambda part: part["type"] != "text")
    return {**row, "prompt": prompt}


def _empty_reasoning(row: dict[str, Any]) -> bool:
    """Whether `row` is a rewrite-with-reasoning example with nothing in `<think>`."""
    return row["task"] in REWRITE_REASONING and row["completion"][0]["content"][0]["text"].startswith("<think></think>")


def editor_outputs(cases, seed: int, samples: int = 1, steps: int | None = None, progress: bool = False) -> list[list]:
    """`samples` outputs of the bundled editor (`load_shapes_backbone`, Euler) for every case, seeded per case and sample.

    Case i's sample s is seeded `seed * 1_000_003 + i + s * 104_729_000`, so an output does not depend
    on the batching, and sample 0 keeps the seeds of the single-sample datasets.
    """
    backbone = load_shapes_backbone()
    editor = FlowEditor(backbone, steps=steps or backbone.default_steps, batch_size=32)
    images: list[list] = [[] for _ in cases]
    with torch.no_grad():
        for sample in range(samples):
            for start in tqdm(range(0, len(cases), 32), desc=f"bundled editor ({sample + 1}/{samples})", disable=not progress):
                chunk = cases[start : start + 32]
                requests = [case.to_request(seed=seed * 1_000_003 + start + i + sample * 104_729_000) for i, case in enumerate(chunk)]
                for i, result in enumerate(editor.edit(requests)):
                    images[start + i].append(result.image)
    return images
