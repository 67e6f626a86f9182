"""Benchmarks a comparison can run, each with its own judge and scoring scheme.

Example:
    >>> from refine.registry import registry
    >>> [k for k in registry.kinds("benchmark") if k in ("edival", "gedit", "imgedit", "shapes-bench", "shapes-mt")]
    ['edival', 'gedit', 'imgedit', 'shapes-bench', 'shapes-mt']

* `shapes-bench`, `shapes-mt` (`shapes.py`): ShapeEdit's reported splits, scored by its exact judge;
  `shapes-val`, `shapes-mt-val`: their twins for tuning.
* `gedit`, `imgedit`, `edival` (`gedit.py`, `imgedit.py`, `edival.py`): local folders in the
  layouts those benchmarks are distributed in (each module documents its layout), scored by an
  MLLM judge from `refine.rewards` with the benchmark's own scheme (`mllm.py`); what they share
  (root folder, lazily built judge, None-aware score helpers) is `folder.py`.
* Anything else: a dotted path to a class implementing `base.Benchmark`.
"""
