"""Pieces the benchmark scripts share: test scenes, interleaved timing with medians, the ShapeEdit editor.

Scripts import it as `from _harness import ...`: `python benchmarks/X.py` puts benchmarks/ first
on sys.path, from the repository root or from benchmarks/ alike.

    >>> from _harness import interleaved_medians, scenes
    >>> stats = interleaved_medians({"noop": lambda: None}, items=4, repeats=2)
    >>> sorted(stats["noop"])
    ['cpu_s', 'items_per_s_cpu', 'items_per_s_wall', 'wall_s']
"""

from __future__ import annotations

import statistics
import time
import warnings
from typing import Callable, Sequence

import numpy as np

from PIL import Image, ImageDraw


def scenes(n: int, offset: int = 0) -> list[Image.Image]:
    """`n` different 32x32 RGB images (a coloured disc on a coloured background), item i seeded by offset + i."""
    colors = ["white", "red", "green", "blue", "yellow", "purple", "orange", "gray"]
    images = []
    for i in range(offset, offset + n):
        image = Image.new("RGB", (32, 32), colors[i % 8])
        ImageDraw.Draw(image).ellipse([i % 16, i % 11, i % 16 + 12, i % 11 + 12], fill=colors[(i + 3) % 8])
        images.append(image)
    return images


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of one call of `fn`."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved_medians(runs: dict[str, Callable[[], object]], items: int, repeats: int) -> dict[str, dict[str, float]]:
    """Warm each run up once, then time them interleaved `repeats` times; medians per run.

    Interleaving spreads the load of other jobs on a shared machine over every run alike; the CPU
    time of this process is reported beside wall time because other jobs inflate only the latter.
    `items` is how many items one call handles (for items/s).
    """
    for fn in runs.values():  # warm-up: lazy imports, allocator, template caches
        fn()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn))
    stats = {}
    for name, values in times.items():
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        stats[name] = {"wall_s": round(wall, 4), "cpu_s": round(cpu, 4), "items_per_s_wall": round(items / wall, 1),
                       "items_per_s_cpu": round(items / cpu, 1)}
    return stats


def speedups(stats: dict[str, dict[str, float]], fast: str, slow: str) -> dict[str, float]:
    """items/s of `fast` over those of `slow`, by wall and by CPU time."""
    return {
        "speedup_wall": round(stats[fast]["items_per_s_wall"] / stats[slow]["items_per_s_wall"], 1),
        "speedup_cpu": round(stats[fast]["items_per_s_cpu"] / stats[slow]["items_per_s_cpu"], 1),
    }


def median_ci(values: Sequence[float], resamples: int = 2000, seed: int = 0):
    """Median of `values` with a percentile-bootstrap 95% interval (a `refine.compare.stats.MeanCI`, .mean the median).

    Repeated timings on a shared machine have a long right tail (another job takes the core), so
    the median, not the mean, is the figure; its interval is bootstrapped as `mean_ci` does the mean's.

    >>> ci = median_ci([1.0, 1.1, 0.9, 1.05, 5.0])
    >>> ci.mean, ci.low <= ci.mean <= ci.high
    (1.05, True)
    """
    from scipy.stats import bootstrap

    from refine.compare.stats import MeanCI

    data = np.asarray(values, dtype=np.float64)
    median = float(np.median(data))
    if data.size < 2 or np.all(data == data[0]):
        return MeanCI(median, median, median)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples warn; the interval still holds
        result = bootstrap((data,), np.median, confidence_level=0.95, n_resamples=resamples, method="percentile",
                           random_state=np.random.default_rng(seed), vectorized=True)
    low, high = result.confidence_interval
    return MeanCI(median, float(low), float(high))


def load_shapes_editor(name: str, batch_size: int):
    """A `FlowEditor` over the ShapeEdit backbone: 'bundled', 'random' (untrained, same architecture) or a folder."""
    from refine.backbones.shapes import build_shapes_backbone, load_shapes_backbone
    from refine.rollout.flow_editor import FlowEditor

    if name == "bundled":
        backbone = load_shapes_backbone()
    elif name == "random":
        backbone = build_shapes_backbone(seed=0)
    else:
        backbone = load_shapes_backbone(name)
    # the backbone's own step count (what `refine edit` uses), not the sampler's generic default
    return FlowEditor(backbone, steps=getattr(backbone, "default_steps", None), batch_size=batch_size)


class QwenAttentionRecorder:
    """Records the attention probabilities of every Qwen-Image block while active (a context manager).

    Recomputed from the queries and keys diffusers' processor hands to `dispatch_attention_fn`,
    which is then called unchanged; `probabilities` holds one (B, heads, S, S) tensor per block
    call, in the joint order text, noise tokens, source tokens.
    """

    def __init__(self) -> None:
        self.probabilities: list = []

    def __enter__(self) -> "QwenAttentionRecorder":
        import torch

        import refine.backbones.shapes  # noqa: F401  (first: it makes diffusers importable)
        import diffusers.models.transformers.transformer_qwenimage as qwen

        self._module, self._original = qwen, qwen.dispatch_attention_fn
        original = self._original

        def record(query, key, value, attn_mask=None, **kwargs):  # (B, S, H, D)
            scores = torch.einsum("bqhd,bkhd->bhqk", query, key) / query.shape[-1] ** 0.5
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask.bool(), float("-inf"))
            self.probabilities.append(scores.softmax(-1))
            return original(query, key, value, attn_mask=attn_mask, **kwargs)

        qwen.dispatch_attention_fn = record
        return self

    def __exit__(self, *exc) -> None:
        self._module.dispatch_attention_fn = self._original

