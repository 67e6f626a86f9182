"""The ShapeEdit training stream as a map-style dataset: batch k is a pure function of (seed, k).

Example:
    >>> from refine.backbones.shapes import build_word_tokenizer
    >>> from refine.shapes.editor_training.data import ShapesBatches
    >>> batches = ShapesBatches(seed=0, batch_size=2, tokenizer=build_word_tokenizer(["red"], 8))
    >>> batches[3]["ids"].shape
    (2, 8)
"""

from __future__ import annotations

from itertools import islice
from typing import Any, Callable, Iterator

import numpy as np

from refine.shapes.data import training_stream

__all__ = ["ShapesBatches"]


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
        return int(np.random.SeedSequence([self.seed & 0xFFFFFFFF, int(index)]).generate_state(1)[0])

    def cases(self, index: int) -> list[Any]:
        """The ShapeEdit cases of batch `index`."""
        make_stream = self.make_stream or training_stream
        stream = make_stream(self.batch_seed(index), size=self.image_size, indirect_fraction=self.indirect_fraction)
        return list(islice(stream, self.batch_size))

    def __getitem__(self, index: int) -> dict[str, Any]:
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

