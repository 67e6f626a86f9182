"""Pretrain the ShapeEdit VLM's vision tower to see the cells, before the language model reads it.

Example (tiny sizes, a few steps):
    >>> import tempfile
    >>> from refine.shapes.vlm.model import VLMSize, build_shapes_vlm   # makes transformers' vision classes importable
    >>> from transformers import AutoModelForImageTextToText, AutoProcessor
    >>> from refine.shapes.vlm.tower import TowerPretrainConfig, pretrain_tower
    >>> folder = build_shapes_vlm(tempfile.mkdtemp(), VLMSize(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
    ...     vision_hidden_size=32, vision_depth=1, vision_heads=2, vocab_size=600, image_side=48, patch_size=8))
    >>> model, processor = AutoModelForImageTextToText.from_pretrained(folder), AutoProcessor.from_pretrained(folder)
    >>> rows = pretrain_tower(model, processor, TowerPretrainConfig(steps=3, batch_size=4, eval_scenes=8))
    >>> [row["tower_step"] for row in rows], sorted(rows[-1])[:3]
    ([3], ['tower_acc_background', 'tower_acc_color', 'tower_acc_shape'])

Why (benchmarks/RESULTS.md, "The ShapeEdit VLM as a judge"): trained jointly with the language model
through SFT, the tower collapses to an image-independent output; frozen at its random init, the
language model never learns to read the objects from it (600 steps: every cell "nothing", in the
16-token and in the cell-aligned geometry). Supervised directly, the tower learns the cells in
minutes. So this stage trains the tower and its merger with small classification heads on the
merged tokens, then drops the heads; SFT then runs with the tower frozen (`freeze_vision`,
`freeze_merger`), so the language model reads features in which each object is already salient.

The heads are shared by the nine tokens of the cell-aligned geometry (`image_side=48,
patch_size=8`: token i covers cell i in reading order): one linear map per attribute (shape, object
colour, size, each with a "nothing" class, and the background colour) applied to every token, so a
token must say what is in *its own* cell the same way wherever the cell is. That is what the
language model then needs: what by content, where by the token's position.

Two options found necessary (benchmarks/RESULTS.md, stop 34). `position_head`: the tower's
attention is relative (2-D rotary), so nothing in a token's content says which cell it covers and
the language model did not learn where objects are; one more shared head that must name each
token's cell writes it in (the grid is then read: 26 of 30 shapes-val scenes exact, from 1).
`outputs`: a share of every batch are bundled-editor outputs (blurred, partly edited), each cell
labelled with what ShapeEdit's parser (`parse_image`, which reads the image alone, no target) finds
there, so an editor's output is read as the judge's labels read it (grid exact on val edits 40% ->
68%).
`clutter_head` (stop 35): one more head says whether the parser finds stray marks in the token's cell.
Two bundled-editor outputs of one input most often differ exactly there (the exact judge gives a
right object 0.75 of the instruction-following credit clean and 0.38 "with stray marks"; 27% of the
cells of shapes-val edits hold such marks), and a tower trained on the scene alone need not keep it.

Written by hand rather than through TRL: this is supervised classification of the vision tower with
auxiliary heads, not language-model fine-tuning, and no TRL trainer trains a vision tower alone.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator

import torch
from pydantic import Field
from torch import nn

from refine.config import RefineConfig
from refine.errors import ConfigError
from refine.shapes.data import training_stream
from refine.shapes.judge import ParsedScene, parse_image
from refine.shapes.vlm.data import editor_outputs
from refine.shapes.vlm.probes import visual_tokens
from refine.shapes.world import COLOR_NAMES, GRID, POSITIONS, SHAPES, SIZES, Scene, render

CELLS = GRID * GRID
NOTHING = 0  # class 0 of the per-cell heads: an empty cell


class TowerPretrainConfig(RefineConfig):
    """The tower's supervised stage (`VLMTrainConfig.tower`; steps 0: skipped)."""

    steps: int = Field(0, ge=0, description="optimizer steps of the tower pretraining (0: no tower stage)")
    batch_size: int = Field(32, ge=1, description="scenes per step")
    learning_rate: float = Field(1e-3, gt=0, description="AdamW learning rate (constant after a 10-step warm-up)")
    seed: int = Field(41, description="training-stream seed of the scenes (a stream of its own)")
    eval_scenes: int = Field(256, ge=1, description="held-out scenes (another stream) for the accuracies logged at the end")
    log_every: int = Field(50, ge=1, description="log loss and train accuracies every this many steps")
    outputs: float = Field(
        0.0, ge=0, le=1, description="share of every batch that are bundled-editor outputs of stream cases (blurred, "
        "partly edited, off-colour), each cell labelled with what ShapeEdit's exact parser reads there (parse_scene), so "
        "the tower reads an editor's output as the judge's labels do, not only clean renders")
    output_pool: int = Field(512, ge=1, description="editor outputs generated once for the tower stage (cycled)")
    position_head: bool = Field(
        False, description="also train a head that tells from each token which cell it covers, so every visual token "
        "carries its own position in its content (the language model then reads where from the token, not only from "
        "its rotary position)")
    clutter_head: bool = Field(
        False, description="also train a head that tells from each token whether the exact parser finds stray marks in "
        "its cell (clean renders: never; editor outputs: as `parse_image` reads them). The exact judge's partial credit "
        "turns on that flag (\"a small blue square\" vs \"... with stray marks\"), and it is what tells two edits of "
        "one input apart most often; needs `outputs` > 0 for any positive label")


def cell_targets(scene: Scene, clutter: tuple[bool, ...] | None = None) -> dict[str, torch.Tensor]:
    """Per-cell class indices (reading order) of one scene: shape / color / size (0 = nothing), the background,
    the cell's own index, and whether the cell holds stray marks (`clutter`, per cell; None: a clean render, none).

    >>> from refine.shapes.world import Obj
    >>> t = cell_targets(Scene("white", (Obj("square", "red", "large", (0, 2)),)))
    >>> t["shape"].tolist()[:4], int(t["size"][2]), t["background"].shape
    ([0, 0, 2, 0], 2, torch.Size([9]))
    """
    shape, color, size = [NOTHING] * CELLS, [NOTHING] * CELLS, [NOTHING] * CELLS
    for obj in scene.objects:
        cell = POSITIONS.index(tuple(obj.position))
        shape[cell] = SHAPES.index(obj.shape) + 1
        color[cell] = COLOR_NAMES.index(obj.color) + 1
        size[cell] = SIZES.index(obj.size) + 1
    background = [COLOR_NAMES.index(scene.background)] * CELLS
    marks = [int(flag) for flag in clutter] if clutter is not None else [0] * CELLS
    return {name: torch.tensor(values) for name, values in
            (("shape", shape), ("color", color), ("size", size), ("background", background), ("cell", range(CELLS)),
             ("clutter", marks))}


class CellHeads(nn.Module):
    """One linear classifier per attribute, shared by every visual token (training aid, not saved)."""

    def __init__(self, width: int, position: bool = False, clutter: bool = False) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({
            "shape": nn.Linear(width, len(SHAPES) + 1),
            "color": nn.Linear(width, len(COLOR_NAMES) + 1),
            "size": nn.Linear(width, len(SIZES) + 1),
            "background": nn.Linear(width, len(COLOR_NAMES)),
        })
        if position:  # which cell the token covers: the token's place written into its content
            self.heads["cell"] = nn.Linear(width, CELLS)
        if clutter:  # stray marks in the token's cell, as the exact parser reads them
            self.heads["clutter"] = nn.Linear(width, 2)

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head(tokens) for name, head in self.heads.items()}


def _scenes(seed: int) -> Iterator[Scene]:
    """Sources and targets of the training stream of `seed`: scenes before and after an edit."""
    for case in training_stream(seed):
        yield case.source
        yield case.target


def _stack(scenes: list[Scene | ParsedScene]) -> dict[str, torch.Tensor]:
    """Targets of a batch: a clean render's scene, or an editor output's parse (its scene and stray marks)."""
    targets = [cell_targets(s.scene, tuple(cell.clutter for cell in s.cells)) if isinstance(s, ParsedScene) else cell_targets(s)
               for s in scenes]
    return {name: torch.stack([t[name] for t in targets]) for name in targets[0]}


def _accuracies(logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> dict[str, float]:
    return {f"tower_acc_{name}": float((logits[name].argmax(-1) == targets[name]).float().mean()) for name in logits}


def pretrain_tower(model, processor, config: TowerPretrainConfig, logger=None) -> list[dict[str, Any]]:
    """Train `model`'s vision tower and merger in place on per-cell heads; returns the logged rows.

    The language model is untouched (its parameters get no gradient). The last row holds held-out
    accuracies on `eval_scenes` scenes of another stream (`tower_eval_acc_*`, against
    `tower_eval_majority_*`: what always answering the commonest class scores).
    """
    grid = processor.image_processor([render(Scene("white"))], return_tensors="pt")["image_grid_thw"][0]
    tokens_per_image = int(grid.prod()) // processor.image_processor.merge_size**2
    if tokens_per_image != CELLS:
        raise ConfigError(f"tower pretraining needs one visual token per grid cell ({CELLS}); this model gives "
                          f"{tokens_per_image}: build it with model.image_side=48 model.patch_size=8")
    torch.manual_seed(config.seed)
    visual = model.model.visual
    heads = CellHeads(model.config.text_config.hidden_size, position=config.position_head, clutter=config.clutter_head)
    parameters = list(visual.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.0)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 10))
    loss_fn = nn.CrossEntropyLoss()
    stream = _scenes(config.seed)
    per_batch = round(config.outputs * config.batch_size)
    pool = itertools.cycle(_output_pool(config.seed, config.output_pool)) if per_batch else iter(())
    was_training = model.training
    model.train()
    rows: list[dict[str, Any]] = []
    for step in range(1, config.steps + 1):
        scenes: list[Scene | ParsedScene] = list(itertools.islice(stream, config.batch_size - per_batch))
        images = [render(scene) for scene in scenes]
        for image, parsed in itertools.islice(pool, per_batch):
            images.append(image)
            scenes.append(parsed)
        targets = _stack(scenes)
        logits = heads(visual_tokens(model, processor, images))
        loss = sum(loss_fn(logits[name].flatten(0, 1), targets[name].flatten()) for name in logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        warmup.step()
        if step % config.log_every == 0 or step == config.steps:
            row = {"tower_step": step, "tower_loss": loss.item(), **_accuracies(logits, targets)}
            if step == config.steps:
                row.update(_evaluate(model, processor, heads, config))
            rows.append(row)
            if logger is not None:
                logger.write(row)
    model.train(was_training)
    return rows


def _output_pool(seed: int, size: int) -> list[tuple[Any, ParsedScene]]:
    """`size` bundled-editor outputs of stream cases of `seed`, each with what the exact parser reads in it (`ParsedScene`)."""
    cases = list(itertools.islice(training_stream(seed), size))
    return [(image, parse_image(image)) for (image,) in editor_outputs(cases, seed)]


def _evaluate(model, processor, heads: CellHeads, config: TowerPretrainConfig) -> dict[str, float]:
    """Held-out accuracies on scenes of another stream, beside the majority class's (and on editor outputs, if trained on them)."""
    scenes = list(itertools.islice(_scenes(config.seed + 1_000_003), config.eval_scenes))
    row = _held_out(model, processor, heads, [render(scene) for scene in scenes], scenes, "tower_eval")
    if config.outputs > 0:
        pool = _output_pool(config.seed + 1_000_003, config.eval_scenes)
        row.update(_held_out(model, processor, heads, [image for image, _ in pool], [parsed for _, parsed in pool], "tower_eval_outputs"))
    return row


def _held_out(model, processor, heads: CellHeads, images, scenes: list[Scene | ParsedScene], prefix: str) -> dict[str, float]:
    targets = _stack(scenes)
    with torch.no_grad():
        logits = heads(visual_tokens(model, processor, images))
    row = {k.replace("tower_acc", f"{prefix}_acc"): v for k, v in _accuracies(logits, targets).items()}
    for name in logits:
        target = targets[name]
        row[f"{prefix}_majority_{name}"] = float((target == target.flatten().mode().values).float().mean())
    return row
