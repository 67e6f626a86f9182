"""Compose refiners around an editor in Python, edit a few ShapeEdit cases, and look at what each did.

Usage:
    python examples/compose_refiners.py            # 6 cases, the bundled editor's full sampling
    python examples/compose_refiners.py --quick    # 2 cases, 4 sampling steps (what the test runs)

The pattern works for any editor: `compose(editor, *refiners)` stacks refiners (first = innermost)
and refuses orders that cannot work (a white-box refiner such as a LoRA loader placed after a
black-box one such as the thinker loop). Every refiner records its turns in `result.steps`.
"""

from __future__ import annotations

import argparse

from refine import compose
from refine.backbones.shapes import load_shapes_backbone
from refine.compare.benchmarks.shapes import shapes_bench
from refine.edit_r1.refiner import BUNDLED_SHAPES_LORA, EditR1Refiner
from refine.errors import ConfigError
from refine.rollout.flow_editor import FlowEditor
from refine.shapes.judge import judge_meta
from refine.thinker.config import build_thinker_refiner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 cases and 4 sampling steps")
    args = parser.parse_args()
    cases, steps = (2, 4) if args.quick else (6, 16)

    # 1. an editor: the bundled ShapeEdit backbone behind a batched flow-matching sampler
    #    (two copies: white-box refiners such as the LoRA loader modify their editor's backbone)
    plain = FlowEditor(load_shapes_backbone(), sampler="euler", steps=steps)
    editor = FlowEditor(load_shapes_backbone(), sampler="euler", steps=steps)

    # 2. refiners: Edit-R1's LoRA (white-box: goes first) and the thinker loop with the expert
    refiners = []
    if (BUNDLED_SHAPES_LORA / "pytorch_lora_weights.safetensors").is_file():
        refiners.append(EditR1Refiner())  # the bundled ShapeEdit LoRA
    else:
        print(f"note: no bundled Edit-R1 LoRA in {BUNDLED_SHAPES_LORA}; composing without it")
    refiners.append(build_thinker_refiner(thinker="expert", max_turns=3))
    refined = compose(editor, *refiners)

    # compose checks the order before building anything: the LoRA cannot go after the thinker
    try:
        compose(FlowEditor(load_shapes_backbone(), steps=steps), build_thinker_refiner(), EditR1Refiner())
    except ConfigError as err:
        print(f"refused as expected: {err}")

    # 3. edit some indirect cases (they need reasoning) and inspect the trace of each
    benchmark = shapes_bench()
    chosen = [c for c in benchmark.cases() if c.meta["phrasing"] == "indirect"][:cases]
    requests = [benchmark.request(case, 0, case.source_image(), seed=0) for case in chosen]
    alone, results = plain.edit(requests), refined.edit(requests)
    for request, before, after in zip(requests, alone, results):
        print(f"\n{request.meta['case_id']}: {request.instruction!r}")
        for step in after.steps:
            scores = ", ".join(f"{k} {v:.1f}" for k, v in step.scores.items())
            print(f"  {step.kind:6s} {step.source:14s} {step.instruction or '':60.60s} {scores}")
        base_score, refined_score = judge_meta(request.meta, before.image).overall, judge_meta(request.meta, after.image).overall
        print(f"  judge overall: editor alone {base_score:.2f} -> composed {refined_score:.2f}")


if __name__ == "__main__":
    main()
