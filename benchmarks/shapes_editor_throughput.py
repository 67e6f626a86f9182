"""Throughput of ShapeEdit's editor: edits per second at its default steps, batch 1 and batched.

Usage:
    python benchmarks/shapes_editor_throughput.py                       # bundled editor, 2 threads
    python benchmarks/shapes_editor_throughput.py --editor runs/base-shapes/final --cases 32 --batch 16

Runs `FlowEditor` (Euler, the editor's default steps and guidance, CFG branches in one pass) on
shapes-bench cases with `torch.set_num_threads(--threads)`, once one request at a time and once in
batches of `--batch` (CFG doubles the transformer batch). Each configuration is warmed up on one
batch first; the figure is the median edits/s over `--repeats` timed passes. A shared machine
makes absolute numbers noisy: compare the two rows of one run.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--editor", default=None, help="editor folder (default: the bundled refine/assets/shapes-editor)")
    parser.add_argument("--cases", type=int, default=16, help="shapes-bench cases per timed pass")
    parser.add_argument("--batch", type=int, default=16, help="requests per forward pass in the batched row")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the editor's default_steps)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per configuration (median reported)")
    args = parser.parse_args()

    import torch

    from refine.backbones.shapes import load_shapes_backbone
    from refine.rollout.flow_editor import FlowEditor
    from refine.shapes.data import load_split

    torch.set_num_threads(args.threads)
    backbone = load_shapes_backbone(args.editor)
    steps = args.steps or backbone.default_steps
    cases = load_split("shapes-bench")[:: max(1, 540 // args.cases)][: args.cases]
    requests = [c.to_request(seed=i) for i, c in enumerate(cases)]
    print(f"editor: {args.editor or 'bundled'}, {sum(p.numel() for p in backbone.parameters()) / 1e6:.2f}M parameters, "
          f"steps={steps}, guidance={backbone.default_guidance}, threads={args.threads}, cases={len(requests)}")
    rows = []
    for batch in (1, args.batch):
        # FlowEditor.batch_size counts transformer items: a CFG request is two.
        items = batch * (2 if backbone.default_guidance not in (None, 1.0) else 1)
        editor = FlowEditor(backbone, sampler="euler", steps=steps, batch_size=items)
        chunks = [requests[i : i + batch] for i in range(0, len(requests), batch)]
        editor.edit(chunks[0])  # warm-up
        rates = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            for chunk in chunks:
                editor.edit(chunk)
            rates.append(len(requests) / (time.perf_counter() - started))
        rows.append((batch, statistics.median(rates), min(rates), max(rates)))
    print(f"{'batch':>5} | {'edits/s (median)':>16} | {'min':>6} | {'max':>6}")
    for batch, median, low, high in rows:
        print(f"{batch:>5} | {median:>16.2f} | {low:>6.2f} | {high:>6.2f}")
    print(f"batched / batch-1 speed-up: {rows[1][1] / rows[0][1]:.2f}x")


if __name__ == "__main__":
    main()
