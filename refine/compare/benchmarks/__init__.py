"""Benchmarks a comparison can run, each with its own judge and scoring scheme.

Example:
    >>> from refine.registry import registry
    >>> sorted(k for k in registry.kinds("benchmark") if "." not in k)
    ['edival', 'gedit', 'imgedit', 'kris', 'mse-bench', 'rise', 'shapes-bench', 'shapes-mt', 'shapes-mt-val', 'shapes-val']

* `shapes-bench`, `shapes-mt` (`shapes.py`): ShapeEdit's reported splits, scored by its exact judge;
  `shapes-val`, `shapes-mt-val`: their twins for tuning. Their `judge` (`vlm`: the bundled ShapeEdit
  VLM, or an MLLM judge spec) adds a VLM judge's score as the headline, beside the exact one (`shapes_vlm.py`).
* `gedit`, `imgedit`, `edival`, `kris`, `rise`, `mse-bench` (`gedit.py`, `imgedit.py`,
  `edival.py`, `kris.py`, `rise.py`, `mse.py`): local copies in the forms those benchmarks are
  distributed in (each module documents its layouts; `hub.py` reads a Hugging Face dataset as
  parquet, Arrow shards or a `save_to_disk` folder), scored by an MLLM judge from `refine.rewards`
  with the benchmark's own scheme (`mllm.py`); what they share (root folder, lazily built judge,
  None-aware score helpers, preflight messages) is `folder.py`. `refine compare export` writes a
  run's outputs where each benchmark's official evaluator reads them (`refine.compare.export`).
* Anything else: a dotted path to a class implementing `base.Benchmark`.
"""
