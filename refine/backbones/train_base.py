"""Base training of ShapeEdit's editor: rectified flow on the ShapeEdit stream, with accelerate.

Example (a tiny run; the real one is `refine train base --config examples/configs/base/shapes.yaml`):
    >>> from refine.backbones.train_base import train
    >>> from refine.backbones.train_base_config import BaseTrainConfig
    >>> config = BaseTrainConfig(output_dir="/tmp/base-demo", max_steps=2, warmup_steps=0, decay_steps=1,
    ...                          batch_size=2, model={"layers": 1, "width": 32, "heads": 2}, eval={"every": 0})
    >>> config.model.layers, config.eval.every
    (1, 0)
    >>> summary = train(config)                                   # doctest: +SKIP
    >>> summary["step"], summary["final_dir"]                     # doctest: +SKIP
    (2, '/tmp/base-demo/final')

The loop, top to bottom (`train`):
1. Devices and threads (`accelerate.Accelerator`: device, mixed precision, processes).
2. The editor (`build_shapes_backbone`, or `init_from`), an EMA of its weights (diffusers'
   `EMAModel`: the EMA is what evaluation samples with and what is exported), AdamW and the
   learning-rate schedule (`diffusers.optimization.get_scheduler`).
3. Resume: model, EMA, optimizer, schedule, RNG and step from a checkpoint.
4. Data: batch k is a pure function of (seed, k) (`ShapesBatches`), so the data position after
   a resume is the step itself and nothing is replayed.
5. Steps: rectified-flow loss ``|| v(x_t, t) - (noise - x_0) ||^2`` with x_t = (1 - t) x_0 + t noise,
   t logit-normal (or uniform), the instruction dropped with probability `cfg_dropout`
   (so classifier-free guidance works); clip, step, EMA update.
6. Every `log_every` steps a line in metrics.jsonl; every `eval.every` steps the EMA editor is
   scored by the ShapeEdit judge on a fixed shapes-val subset (the tuning split), by its flow-matching loss on a
   fixed held-out batch (`validation_loss`) and by its one-step x0 errors at t = 1 on the edited
   and the kept pixels of that batch (`one_step_errors`); every `checkpoint_every` steps an atomic
   checkpoint.
7. The EMA editor is exported to `output_dir/final` (a folder `load_shapes_backbone` reads).

Checkpoints (`output_dir/checkpoints/step-0001000/`) are written to a `.tmp` folder and renamed,
so a crash never leaves a half-written one. Tensors are safetensors only (no pickle): `model`,
`ema`, `optimizer` (flattened AdamW state) and `rng` (torch generator states); scalars go to
`trainer_state.json`, written last. `editor/` holds the EMA weights as a loadable editor folder.

This module imports torch inside its functions: the CLI imports it for `refine --help`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

import typer

from refine.backbones.train_base_config import BaseTrainConfig, TimestepConfig
from refine.errors import ArtifactError, ConfigError, InputError

if TYPE_CHECKING:
    import torch

    from refine.backbones.shapes import ShapesBackbone

__all__ = [
    "BaseTrainConfig",
    "ShapesBatches",
    "cli",
    "evaluate_editor",
    "evaluate_multiturn",
    "find_checkpoint",
    "flow_matching_loss",
    "load_checkpoint",
    "sample_timesteps",
    "save_checkpoint",
    "score_cases",
    "summarize_scores",
    "train",
]

CHECKPOINT_PATTERN = re.compile(r"^step-(\d+)$")


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


class ShapesBatches:
    """Batch k of the ShapeEdit training stream, as arrays: a map-style dataset indexed by batch.

    Each batch draws `batch_size` cases from a stream seeded by ``SeedSequence([seed, k])``:
    batches are independent of each other and of the order they are asked in, so DataLoader
    workers and resumed runs see exactly the batches an uninterrupted run sees.

    Example:
        >>> from refine.backbones.shapes import build_word_tokenizer
        >>> batches = ShapesBatches(seed=0, batch_size=2, tokenizer=build_word_tokenizer(["red"], 8))
        >>> {k: v.shape for k, v in batches[0].items()}
        {'source': (2, 3, 32, 32), 'target': (2, 3, 32, 32), 'ids': (2, 8), 'mask': (2, 8), 'indirect': (2,)}

    Args:
        seed: base seed of the stream.
        batch_size: cases per batch.
        tokenizer: the editor's `tokenizers.Tokenizer` (fixed-length padding).
        indirect_fraction: share of indirect phrasings.
        image_size: rendering size.
        make_stream: ``(seed, size, indirect_fraction) -> iterator of ShapeCase``; defaults to
            `refine.shapes.data.training_stream`.
    """

    def __init__(
        self,
        seed: int,
        batch_size: int,
        tokenizer: Any,
        indirect_fraction: float = 0.25,
        image_size: int = 32,
        make_stream: Callable[..., Iterator[Any]] | None = None,
    ) -> None:
        self.seed = seed
        self.batch_size = batch_size
        self.tokenizer = tokenizer
        self.indirect_fraction = indirect_fraction
        self.image_size = image_size
        self.make_stream = make_stream

    def batch_seed(self, index: int) -> int:
        import numpy as np

        return int(np.random.SeedSequence([self.seed & 0xFFFFFFFF, int(index)]).generate_state(1)[0])

    def cases(self, index: int) -> list[Any]:
        """The ShapeEdit cases of batch `index`."""
        from itertools import islice

        make_stream = self.make_stream
        if make_stream is None:
            from refine.shapes.data import training_stream as make_stream
        stream = make_stream(self.batch_seed(index), size=self.image_size, indirect_fraction=self.indirect_fraction)
        return list(islice(stream, self.batch_size))

    def __getitem__(self, index: int) -> dict[str, Any]:
        import numpy as np

        cases = self.cases(index)
        # (B, H, W, 3) uint8 -> (B, 3, H, W): one array op per batch, no per-pixel Python.
        source = np.stack([np.asarray(c.source_image.convert("RGB"), dtype=np.uint8) for c in cases]).transpose(0, 3, 1, 2)
        target = np.stack([np.asarray(c.target_image.convert("RGB"), dtype=np.uint8) for c in cases]).transpose(0, 3, 1, 2)
        encodings = self.tokenizer.encode_batch([c.instruction for c in cases])
        return {
            "source": np.ascontiguousarray(source),
            "target": np.ascontiguousarray(target),
            "ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "indirect": np.array([getattr(c, "phrasing", "direct") != "direct" for c in cases]),
        }

    def __len__(self) -> int:  # DataLoader asks; the stream is unbounded
        return 2**62


# ----------------------------------------------------------------------------------------------
# Objective
# ----------------------------------------------------------------------------------------------


def sample_timesteps(n: int, generator: "torch.Generator", sampling: str = "logit_normal", mean: float = 0.0, std: float = 1.0) -> "torch.Tensor":
    """(n,) training times in (0, 1): ``sigmoid(N(mean, std))`` (logit-normal, SD3) or uniform.

    >>> import torch
    >>> t = sample_timesteps(1000, torch.Generator().manual_seed(0))
    >>> bool((t > 0).all() and (t < 1).all()), round(float(t.mean()), 1)
    (True, 0.5)
    """
    import torch

    if sampling == "uniform":
        return torch.rand(n, generator=generator)
    if sampling == "logit_normal":
        return torch.sigmoid(mean + std * torch.randn(n, generator=generator))
    raise ConfigError(f"timesteps.sampling={sampling!r}: use 'logit_normal' or 'uniform'")


def flow_matching_loss(
    model: "torch.nn.Module",
    source: "torch.Tensor",
    target: "torch.Tensor",
    ids: "torch.Tensor",
    mask: "torch.Tensor",
    t: "torch.Tensor",
    noise: "torch.Tensor",
    backbone: "ShapesBackbone | None" = None,
    object_weight: float = 1.0,
    edit_weight: float = 1.0,
) -> "torch.Tensor":
    """Rectified-flow MSE for pixels (B, 3, H, W) in [0, 1], tokens (B, L), times (B,), noise (B, N, C).

    `model` is a `ShapesBackbone` or its accelerate-wrapped self (its `forward` is the training pass,
    returning a velocity whatever the backbone's `prediction`); `backbone` is the unwrapped editor
    when `model` is a wrapper (default: `model`). The loss lives in the space the backbone predicts
    (`ShapesBackbone.output_from_velocity` / `output_target`): ``velocity`` -> ||v - (noise - x0)||^2;
    ``x0`` -> ||x0_hat - x0||^2, i.e. the velocity loss weighted by max(t, x0_min_t)^2 -- uniform over
    t in x0 space (the x-prediction, x-loss variant of Li & He 2025).

    Per-pixel weights (both default 1, the plain mean): `object_weight` on the source's object pixels
    (`source_object_mask`), `edit_weight` on the pixels the edit changes (`edited_pixel_mask`); where
    both apply they add up: w = 1 + (object_weight - 1) * objects + (edit_weight - 1) * edited.

    >>> import torch
    >>> from refine.backbones.shapes import build_shapes_backbone
    >>> bb = build_shapes_backbone(layers=1, width=32, heads=2, vocabulary=["red"])
    >>> ids, mask = bb.tokenize(["red"])
    >>> loss = flow_matching_loss(bb, torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32), ids, mask,
    ...                           torch.tensor([0.5]), torch.randn(1, 64, 48))
    >>> loss.dim(), bool(loss > 0)
    (0, True)
    """
    import torch
    import torch.nn.functional as F

    from refine.backbones.shapes import pack_pixels

    x0 = pack_pixels(target)  # (B, N, C) in [-1, 1]
    source_latents = pack_pixels(source)  # (B, N_src, C)
    t_ = t.view(-1, 1, 1)
    x_t = (1.0 - t_) * x0 + t_ * noise
    velocity = model(x_t, t, source_latents, ids, mask).float()  # (B, N, C)
    editor = model if backbone is None else backbone
    output, wanted = editor.output_from_velocity(velocity, x_t, t), editor.output_target(x0, noise)
    if object_weight == 1.0 and edit_weight == 1.0:
        return F.mse_loss(output, wanted)

    pixel_weight = torch.ones_like(source[:, :1])  # (B, 1, H, W); a mask is computed only when its weight is on
    if object_weight != 1.0:
        pixel_weight = pixel_weight + (object_weight - 1.0) * source_object_mask(source)
    if edit_weight != 1.0:
        pixel_weight = pixel_weight + (edit_weight - 1.0) * edited_pixel_mask(source, target)
    weight = (pack_pixels(pixel_weight.expand_as(source)) + 1.0) / 2.0  # pack maps [0, 1] to [-1, 1]: undo it
    return (weight * (output - wanted) ** 2).sum() / weight.sum()


def source_object_mask(source: "torch.Tensor") -> "torch.Tensor":
    """(B, 1, H, W) bool: the source pixels that differ from the image's most common colour (its background).

    Depends on the source only, so a loss weighted by it keeps its minimiser at the conditional mean
    (a weight that also looked at the target would pull the editor towards changing things).

    >>> import torch
    >>> image = torch.zeros(1, 3, 4, 4); image[0, 0, 1, 2] = 1.0
    >>> source_object_mask(image)[0, 0].nonzero().tolist()
    [[1, 2]]
    """
    import torch

    codes = (source * 255).round().long()
    codes = codes[:, 0] * 65536 + codes[:, 1] * 256 + codes[:, 2]  # (B, H, W): one integer per colour
    background = torch.mode(codes.flatten(1), dim=1).values  # (B,)
    return (codes != background.view(-1, 1, 1)).unsqueeze(1)


def edited_pixel_mask(source: "torch.Tensor", target: "torch.Tensor") -> "torch.Tensor":
    """(B, 1, H, W) bool: the pixels where the target differs from the source (what the edit changes).

    Unlike `source_object_mask` this looks at the target, so a loss weighted by it is minimised by a
    weighted mean that leans towards changing pixels. On ShapeEdit the target is a deterministic
    function of (source, instruction) -- an "add" names shape, colour, size and cell -- so the
    conditional distribution is a point and the lean vanishes; what remains is the weight's purpose,
    a larger share of the gradient for the few pixels an edit touches (an added shape is ~2% of them).

    >>> import torch
    >>> source = torch.zeros(1, 3, 4, 4); target = source.clone(); target[0, 2, 3, 0] = 1.0
    >>> edited_pixel_mask(source, target)[0, 0].nonzero().tolist()
    [[3, 0]]
    """
    return (source != target).any(dim=1, keepdim=True)


def validation_loss(backbone: "ShapesBackbone", batch: dict[str, Any], seed: int = 0) -> float:
    """The flow-matching loss of `backbone` on a `ShapesBatches` item, with fixed noise and evenly spaced t.

    Times are the midpoints ``(i + 0.5) / n`` (each case its own), noise comes from `seed`: the same
    figure for the same weights, smooth across training steps (the per-step training loss is one
    random batch at random times).

    >>> from refine.backbones.shapes import build_shapes_backbone
    >>> bb = build_shapes_backbone(layers=1, width=32, heads=2, vocabulary=["red"])
    >>> batch = ShapesBatches(seed=1, batch_size=4, tokenizer=bb.tokenizer)[0]
    >>> validation_loss(bb, batch) == validation_loss(bb, batch) > 0
    True
    """
    import torch

    source = torch.from_numpy(batch["source"]).float().div_(255.0)
    target = torch.from_numpy(batch["target"]).float().div_(255.0)
    ids, mask = torch.from_numpy(batch["ids"]), torch.from_numpy(batch["mask"])
    n = ids.shape[0]
    t = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    noise = torch.randn((n, *backbone.latent_shape), generator=torch.Generator().manual_seed(seed))
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            device = backbone.device
            loss = flow_matching_loss(backbone, *(x.to(device) for x in (source, target, ids, mask, t, noise)))
    finally:
        backbone.train(was_training)
    return float(loss)


def one_step_errors(backbone: "ShapesBackbone", batch: dict[str, Any], seed: int = 0) -> dict[str, float]:
    """Where the editor stands at t = 1: its one-step x0 estimate from pure noise against the target.

    Returns the mean |x0_hat - x0| ([-1, 1] scale) over the pixels the edit changes (`edit_error`:
    has it grounded the instruction?) and over the others (`copy_error`: does it keep the source?).
    At t = 1 nothing of the target is in x_t, so the estimate shows what the editor decided to do
    before sampling commits to anything; the flow loss mixes both with denoising at every t and
    barely moves when only the edits improve.

    >>> from refine.backbones.shapes import build_shapes_backbone
    >>> bb = build_shapes_backbone(layers=1, width=32, heads=2, vocabulary=["red"])
    >>> errors = one_step_errors(bb, ShapesBatches(seed=1, batch_size=4, tokenizer=bb.tokenizer)[0])
    >>> sorted(errors), all(v > 0 for v in errors.values())
    (['copy_error', 'edit_error'], True)
    """
    import torch

    from refine.backbones.shapes import pack_pixels

    source = torch.from_numpy(batch["source"]).float().div_(255.0)
    target = torch.from_numpy(batch["target"]).float().div_(255.0)
    ids, mask = torch.from_numpy(batch["ids"]), torch.from_numpy(batch["mask"])
    noise = torch.randn((ids.shape[0], *backbone.latent_shape), generator=torch.Generator().manual_seed(seed))
    t = torch.ones(ids.shape[0])
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            device = backbone.device
            velocity = backbone(noise.to(device), t.to(device), pack_pixels(source).to(device), ids.to(device), mask.to(device))
    finally:
        backbone.train(was_training)
    error = (noise - velocity.float().cpu() - pack_pixels(target)).abs()  # x0_hat = x_1 - 1 * v
    changed = pack_pixels((source != target).any(dim=1, keepdim=True).expand_as(source).float()) > 0
    return {"edit_error": float(error[changed].mean()), "copy_error": float(error[~changed].mean())}


def training_inputs(
    batch: dict[str, "torch.Tensor"],
    empty: tuple["torch.Tensor", "torch.Tensor"],
    generator: "torch.Generator",
    device,
    *,
    cfg_dropout: float,
    timesteps: TimestepConfig,
):
    """Pixels, tokens (with CFG dropout), times and noise for one step; every draw from `generator`.

    `batch` is a `ShapesBatches` item as tensors (what the DataLoader yields); `empty` the
    tokenized empty instruction. Returns [source, target, ids, mask, t, noise] on `device`, the
    arguments `flow_matching_loss` takes after the model.
    """
    import torch

    source = batch["source"].float().div_(255.0)
    target = batch["target"].float().div_(255.0)
    ids, mask = batch["ids"], batch["mask"]
    b = ids.shape[0]
    # A fixed order of draws (dropout, t, noise) keeps resumed runs bitwise identical.
    drop = torch.rand(b, generator=generator) < cfg_dropout
    t = sample_timesteps(b, generator, timesteps.sampling, timesteps.mean, timesteps.std)
    n = (source.shape[2] // 4) * (source.shape[3] // 4)
    noise = torch.randn((b, n, 48), generator=generator)
    ids = torch.where(drop[:, None], empty[0].expand_as(ids), ids)
    mask = torch.where(drop[:, None], empty[1].expand_as(mask), mask)
    return [x.to(device) for x in (source, target, ids, mask, t, noise)]


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------


def bench_subset(direct: int, indirect: int, split: str = "shapes-val") -> list[Any]:
    """A fixed, category-spread subset of a ShapeEdit split: evenly spaced direct and indirect cases."""
    from refine.shapes.data import load_split

    cases = list(load_split(split))
    picked = []
    for phrasing_is_direct, count in ((True, direct), (False, indirect)):
        pool = [c for c in cases if (c.phrasing == "direct") == phrasing_is_direct]
        count = min(count, len(pool))
        picked.extend(pool[int(i * len(pool) / count)] for i in range(count))  # evenly spaced: every category
    return picked


def score_cases(
    backbone: "ShapesBackbone",
    cases: Sequence[Any],
    *,
    steps: int | None = None,
    guidance: float | None = None,
    sampler: str = "euler",
    seed: int = 0,
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """Edit ShapeEdit `cases` with a `FlowEditor` on `backbone`; one judge row per case.

    Rows hold ``phrasing``, ``category``, ``overall``, ``if``, ``cc``, ``pq``, ``success`` (IF = 1).
    Case i is sampled with seed ``seed * 1_000_003 + i``: scores are comparable across calls.
    """
    import torch

    from refine.rollout.flow_editor import FlowEditor
    from refine.shapes.judge import judge_edit

    was_training = backbone.training
    backbone.eval()
    editor = FlowEditor(backbone, sampler=sampler, steps=steps or backbone.default_steps, guidance=guidance, batch_size=batch_size)
    requests = [case.to_request(seed=seed * 1_000_003 + i) for i, case in enumerate(cases)]
    with torch.no_grad():
        results = editor.edit(requests)
    backbone.train(was_training)
    rows = []
    for case, result in zip(cases, results):
        score = judge_edit(case.source_image, result.image, case)
        rows.append({"phrasing": case.phrasing, "category": case.category, "overall": score.overall,
                     "if": score.if_, "cc": score.cc, "pq": score.pq, "success": float(score.success)})
    return rows


def evaluate_editor(backbone: "ShapesBackbone", cases: Sequence[Any], **sampling: Any) -> dict[str, Any]:
    """Mean judge scores of `score_cases` (same keyword arguments), overall and per phrasing/category.

    Keys: ``n``, ``overall``, ``if``, ``cc``, ``pq``, ``success``, ``overall/<phrasing>``,
    ``success/<phrasing>``, ``overall/<category>`` (see `summarize_scores`).
    """
    return summarize_scores(score_cases(backbone, cases, **sampling))


def evaluate_multiturn(
    backbone: "ShapesBackbone",
    sequences: Sequence[Any],
    *,
    steps: int | None = None,
    guidance: float | None = None,
    sampler: str = "euler",
    seed: int = 0,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Run ShapeEdit sequences turn by turn (each turn edits the previous output) and judge them.

    Returns per turn t (lists indexed by turn): ``success_at_turn`` (share of sequences whose turns
    1..t all fully succeeded, EdiVal's metric), ``if_at_turn`` (mean IF of turn t against its exact
    source/target) and ``cc_original_at_turn`` (mean consistency with the original scene), and ``n``.
    """
    import torch

    from refine.rollout.flow_editor import FlowEditor
    from refine.shapes.judge import judge_sequence, success_rates
    from refine.types import EditRequest

    was_training = backbone.training
    backbone.eval()
    editor = FlowEditor(backbone, sampler=sampler, steps=steps or backbone.default_steps, guidance=guidance, batch_size=batch_size)
    turns = len(sequences[0])
    if any(len(s) != turns for s in sequences):
        raise InputError(f"sequences of {sorted({len(s) for s in sequences})} turns; evaluate sequences of one length together")
    images = [s.source_image for s in sequences]
    outputs: list[list[Any]] = [[] for _ in sequences]
    for turn in range(turns):
        requests = [
            EditRequest(image, s.cases[turn].instruction, seed=seed * 1_000_003 + 16 * i + turn)
            for i, (image, s) in enumerate(zip(images, sequences))
        ]
        with torch.no_grad():
            images = [r.image for r in editor.edit(requests)]
        for out, image in zip(outputs, images):
            out.append(image)
    backbone.train(was_training)
    scores = [judge_sequence(s, out) for s, out in zip(sequences, outputs)]
    mean = lambda values: round(sum(values) / len(values), 4)
    return {
        "n": len(sequences),
        "success_at_turn": [round(r, 4) for r in success_rates(scores)[:turns]],
        "if_at_turn": [mean([s.turns[t].if_ for s in scores]) for t in range(turns)],
        "cc_original_at_turn": [mean([s.cc_original[t] for s in scores]) for t in range(turns)],
    }


def summarize_scores(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means of judge rows (dicts with phrasing, category, overall, if, cc, pq, success) overall and per group.

    >>> summarize_scores([{"phrasing": "direct", "category": "add", "overall": 1.0, "if": 1, "cc": 1, "pq": 1, "success": 1},
    ...                   {"phrasing": "indirect", "category": "add", "overall": 0.0, "if": 0, "cc": 1, "pq": 1, "success": 0}])["overall/add"]
    0.5
    """
    def mean(values):
        values = list(values)
        return round(sum(values) / len(values), 4) if values else float("nan")

    out: dict[str, Any] = {"n": len(rows)}
    for key in ("overall", "if", "cc", "pq", "success"):
        out[key] = mean(r[key] for r in rows)
    for group in ("phrasing", "category"):
        for name in sorted({r[group] for r in rows}):
            out[f"overall/{name}"] = mean(r["overall"] for r in rows if r[group] == name)
            if group == "phrasing":
                out[f"success/{name}"] = mean(r["success"] for r in rows if r[group] == name)
    return out


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------


def save_checkpoint(
    folder: str | Path,
    *,
    backbone: "ShapesBackbone",
    ema: Any,
    optimizer: Any,
    scheduler: Any,
    generator: "torch.Generator",
    step: int,
    ema_backbone: "ShapesBackbone | None" = None,
    save_dtype: str = "float16",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a resumable checkpoint atomically (see the module docstring for its files)."""
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    names = [name for name, _ in backbone.named_parameters()]
    save_file({k: v.detach().contiguous() for k, v in backbone.state_dict().items()}, tmp / "model.safetensors")
    save_file({name: p.detach().contiguous() for name, p in zip(names, ema.shadow_params)}, tmp / "ema.safetensors")
    opt_state = optimizer.state_dict()
    opt_tensors, opt_scalars = {}, {}
    for index, entries in opt_state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                opt_tensors[f"{index}.{key}"] = value.detach().contiguous()
            else:
                opt_scalars.setdefault(str(index), {})[key] = value
    save_file(opt_tensors, tmp / "optimizer.safetensors")
    save_file({"generator": generator.get_state(), "torch": torch.get_rng_state()}, tmp / "rng.safetensors")
    if ema_backbone is not None:
        ema.copy_to(ema_backbone.parameters())
        ema_backbone.save_pretrained(tmp / "editor", dtype=getattr(torch, save_dtype))
    ema_state = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
    state = {
        "step": step,
        "ema": ema_state,
        "optimizer": {"param_groups": opt_state["param_groups"], "scalars": opt_scalars},
        "scheduler": scheduler.state_dict(),
        **(extra or {}),
    }
    # Written last: a folder with trainer_state.json is complete.
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1, default=_json_default) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def load_checkpoint(
    folder: str | Path, *, backbone: "ShapesBackbone", ema: Any, optimizer: Any, scheduler: Any, generator: "torch.Generator"
) -> dict[str, Any]:
    """Restore everything `save_checkpoint` wrote, in place; returns the trainer state (with `step`)."""
    import torch
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "trainer_state.json").is_file():
        raise ArtifactError(f"{folder}: not a complete checkpoint (no trainer_state.json); pick another with resume_from=")
    state = json.loads((folder / "trainer_state.json").read_text())
    backbone.load_state_dict(load_file(folder / "model.safetensors"))
    ema_tensors = load_file(folder / "ema.safetensors")
    names = [name for name, _ in backbone.named_parameters()]
    missing = [n for n in names if n not in ema_tensors]
    if missing:
        raise ArtifactError(f"{folder}: EMA weights miss {missing[:3]}...; the checkpoint is from another model size")
    ema.load_state_dict({**state["ema"], "shadow_params": [ema_tensors[n] for n in names]})
    opt_tensors = load_file(folder / "optimizer.safetensors")
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in opt_tensors.items():
        index, name = key.split(".", 1)
        opt_state.setdefault(int(index), {})[name] = value
    for index, scalars in state["optimizer"]["scalars"].items():
        opt_state.setdefault(int(index), {}).update(scalars)
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["optimizer"]["param_groups"]})
    scheduler.load_state_dict(state["scheduler"])
    rng = load_file(folder / "rng.safetensors")
    generator.set_state(rng["generator"])
    torch.set_rng_state(rng["torch"])
    return state


def find_checkpoint(output_dir: str | Path, resume_from: str) -> Path:
    """The checkpoint folder named by `resume_from`: 'latest' (in output_dir/checkpoints) or a path."""
    if resume_from != "latest":
        path = Path(resume_from)
        if not (path / "trainer_state.json").is_file():
            raise ArtifactError(f"resume_from={resume_from!r} is not a complete checkpoint folder (no trainer_state.json)")
        return path
    found = list_checkpoints(output_dir)
    if not found:
        raise ArtifactError(
            f"--resume: no checkpoint in {Path(output_dir) / 'checkpoints'}; run without --resume to start fresh"
        )
    return found[-1]


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if CHECKPOINT_PATTERN.match(p.name) and (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: int(CHECKPOINT_PATTERN.match(p.name).group(1)))


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to trainer_state.json")


class MetricsLog:
    """Append-only JSONL metrics; on resume, lines past the resumed step (a lost future) are dropped."""

    def __init__(self, path: Path, resume_step: int | None = None, enabled: bool = True) -> None:
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and path.is_file():
            kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))
        elif resume_step is None and path.is_file():
            path.unlink()

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record, default=_json_default) + "\n")


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


def train(config: BaseTrainConfig, *, make_stream: Callable[..., Iterator[Any]] | None = None, eval_cases: Sequence[Any] | None = None) -> dict[str, Any]:
    """Run the base training described by `config` (steps in the module docstring); returns a summary.

    `make_stream` replaces `refine.shapes.data.training_stream` and `eval_cases` the shapes-val
    subset (tests pass small ones). `config.num_threads` applies for the run only.
    """
    import torch

    previous_threads = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    try:
        return _train(config, make_stream, eval_cases)
    finally:
        torch.set_num_threads(previous_threads)


def _train(config: BaseTrainConfig, make_stream: Callable[..., Iterator[Any]] | None, eval_cases: Sequence[Any] | None) -> dict[str, Any]:
    import copy

    import torch

    from refine.backbones.shapes import ShapesBackbone, build_shapes_backbone  # first: it makes diffusers importable

    from accelerate import Accelerator
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    # 1. Devices and threads (and a missing checkpoint fails before anything is built).
    checkpoint = find_checkpoint(config.output_dir, config.resume_from) if config.resume_from else None
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    output_dir = Path(config.output_dir)
    is_main = accelerator.is_main_process

    # 2. Editor, EMA, optimizer, schedule.
    if config.init_from:
        backbone = ShapesBackbone.from_pretrained(config.init_from)
    else:
        m = config.model
        backbone = build_shapes_backbone(
            m.layers, m.width, m.heads, text_layers=m.text_layers, max_text_length=m.max_text_length,
            default_guidance=m.default_guidance, default_steps=m.default_steps, shift=m.shift, prediction=m.prediction,
            qk_norm_init=m.qk_norm_init, seed=config.seed,
        )
    backbone.to(accelerator.device).train()
    ema = EMAModel(backbone.parameters(), decay=config.ema_decay)
    ema_backbone = copy.deepcopy(backbone).eval()  # the EMA weights live here for sampling and export
    optimizer = torch.optim.AdamW(
        backbone.parameters(), lr=config.learning_rate, betas=config.betas, weight_decay=config.weight_decay
    )
    processes = accelerator.num_processes
    # accelerate steps a prepared scheduler once per process per optimizer step.
    if config.lr_scheduler == "warmup_stable_decay":
        from transformers.optimization import get_wsd_schedule

        scheduler = get_wsd_schedule(
            optimizer, num_warmup_steps=config.warmup_steps * processes, num_decay_steps=config.decay_steps * processes,
            num_training_steps=config.max_steps * processes, decay_type="linear",
        )
    else:
        scheduler = get_scheduler(
            config.lr_scheduler, optimizer, num_warmup_steps=config.warmup_steps * processes,
            num_training_steps=config.max_steps * processes,
        )
    model, optimizer, scheduler = accelerator.prepare(backbone, optimizer, scheduler)
    generator = torch.Generator().manual_seed(config.seed * 1000 + accelerator.process_index)

    # 3. Resume.
    step = 0
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, backbone=backbone, ema=ema, optimizer=optimizer, scheduler=scheduler, generator=generator)
        step = int(state["step"])
        accelerator.print(f"resumed from {checkpoint} at step {step}")
    metrics = MetricsLog(output_dir / "metrics.jsonl", resume_step=step if config.resume_from else None, enabled=is_main)
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(config.to_yaml())

    # 4. Data: batch index = step * processes + rank, so resuming at `step` is exact.
    batches = ShapesBatches(
        config.seed, config.batch_size, backbone.tokenizer, config.indirect_fraction, backbone.image_size, make_stream
    )
    indices = range(step * processes + accelerator.process_index, config.max_steps * processes, processes)
    # Its own generator: worker seeding must not draw from the global RNG that checkpoints restore.
    loader = DataLoader(
        batches, batch_size=None, sampler=indices, num_workers=config.num_workers, generator=torch.Generator().manual_seed(config.seed)
    )
    empty = backbone.tokenize([""])
    empty = (empty[0].cpu(), empty[1].cpu())

    cases = val_batch = None
    if config.eval.every > 0 and is_main:
        cases = list(eval_cases) if eval_cases is not None else bench_subset(config.eval.direct_cases, config.eval.indirect_cases)
        if config.eval.loss_cases:
            # Held out: another base seed, so this batch is independent of every training batch.
            val_batch = ShapesBatches(
                config.seed + 1_000_003, config.eval.loss_cases, backbone.tokenizer, config.indirect_fraction, backbone.image_size, make_stream
            )[0]

    def run_eval() -> dict[str, Any]:
        ema.copy_to(ema_backbone.parameters())
        result = evaluate_editor(
            ema_backbone, cases, steps=config.eval.steps, guidance=config.eval.guidance, sampler=config.eval.sampler,
            seed=config.eval.seed, batch_size=config.eval.batch_size,
        )
        if val_batch is not None:
            result["val_loss"] = validation_loss(ema_backbone, val_batch, seed=config.eval.seed)
            result.update(one_step_errors(ema_backbone, val_batch, seed=config.eval.seed))
        metrics.write({"step": step, "eval": result})
        return result

    def checkpoint() -> None:
        accelerator.wait_for_everyone()
        if is_main:
            save_checkpoint(
                output_dir / "checkpoints" / f"step-{step:07d}", backbone=backbone, ema=ema, optimizer=optimizer,
                scheduler=scheduler, generator=generator, step=step, ema_backbone=ema_backbone,
                save_dtype=config.save_dtype, extra={"seconds": seconds_before + time.perf_counter() - started},
            )
            for old in list_checkpoints(output_dir)[: -config.keep_checkpoints]:
                shutil.rmtree(old)

    # 5-6. Steps, logs, evaluations, checkpoints.
    seconds_before = float(state.get("seconds", 0.0)) if config.resume_from else 0.0
    started = time.perf_counter()
    window_start, window_losses, grad_norm, last_eval = time.perf_counter(), [], None, None
    bar = tqdm(total=config.max_steps, initial=step, disable=not (config.progress and is_main), mininterval=5, dynamic_ncols=True)
    for batch in loader:
        source, target, ids, mask, t, noise = training_inputs(
            batch, empty, generator, accelerator.device, cfg_dropout=config.cfg_dropout, timesteps=config.timesteps
        )
        loss = flow_matching_loss(
            model, source, target, ids, mask, t, noise, backbone,
            object_weight=config.object_weight, edit_weight=config.edit_weight,
        )
        accelerator.backward(loss)
        if config.max_grad_norm is not None:
            grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(backbone.parameters())
        step += 1
        window_losses.append(accelerator.reduce(loss.detach(), "mean").item())
        bar.update(1)

        if step % config.log_every == 0 or step == config.max_steps:
            now = time.perf_counter()
            record = {
                "step": step,
                "loss": sum(window_losses) / len(window_losses),
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": grad_norm,
                "steps_per_second": len(window_losses) / max(now - window_start, 1e-9),
                "minutes": round((seconds_before + now - started) / 60, 2),
            }
            metrics.write(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
            window_start, window_losses = now, []
        if cases is not None and (step % config.eval.every == 0 or step == config.max_steps):
            last_eval = run_eval()
            val = (
                f", val_loss {last_eval['val_loss']:.4f}, edit_error {last_eval['edit_error']:.3f}" if "val_loss" in last_eval else ""
            )
            bar.write(f"step {step}: eval overall {last_eval['overall']:.3f} success {last_eval['success']:.3f}{val}")
        if (config.checkpoint_every and step % config.checkpoint_every == 0) or step == config.max_steps:
            checkpoint()
    bar.close()

    # 7. Export the EMA editor.
    accelerator.wait_for_everyone()
    final_dir = output_dir / "final"
    summary = {"step": step, "final_dir": str(final_dir), "eval": last_eval,
               "minutes": round((seconds_before + time.perf_counter() - started) / 60, 2)}
    if is_main:
        ema.copy_to(ema_backbone.parameters())
        tmp = output_dir / "final.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        ema_backbone.save_pretrained(tmp, dtype=getattr(torch, config.save_dtype))
        if final_dir.exists():
            shutil.rmtree(final_dir)
        os.replace(tmp, final_dir)
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
    accelerator.end_training()
    return summary


def cli(
    config: str = typer.Option(..., "--config", "-c", help="YAML config or preset name, e.g. examples/configs/base/shapes.yaml."),
    overrides: Optional[list[str]] = typer.Argument(None, help="key.sub=value overrides, e.g. max_steps=100 model.layers=2."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in output_dir (exact: model, EMA, optimizer, schedule, RNG, data)."),
) -> None:
    """Train ShapeEdit's editor by rectified flow (writes metrics.jsonl, checkpoints/ and final/ to output_dir)."""
    from refine.config import load_config
    from refine.presets import find_preset

    cfg = load_config(BaseTrainConfig, find_preset(config), overrides or [])
    if resume:
        if cfg.resume_from is None:
            cfg.resume_from = "latest"
        else:
            raise ConfigError(f"--resume given with resume_from={cfg.resume_from!r}; use one of the two")
    summary = train(cfg)
    typer.echo(json.dumps(summary, indent=2, default=_json_default))
