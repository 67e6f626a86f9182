"""Local judge throughput: one batched call over a batch against scoring the items one by one.

Run:  python benchmarks/rewards_batched_vs_loop.py [--batch 32] [--repeats 5] [--threads 2] [--mode score_logit]

Same tiny Qwen2.5-VL judge (refine.testing.tiny_vlm, random weights), same `batch` items (32x32
images, instructions of different lengths so the batched call really pads): `MLLMJudge(mode)`
called once on the whole batch (`TransformersVLM(batch_size=batch)`: left padding, one forward
pass) against a Python loop calling the same judge on one item at a time, the loop a user would
write first. Caching is off; the two are interleaved `repeats` times after a warm-up; medians of
wall time and of this process's CPU time (robust on a shared machine) are reported.
Goal: batched >= 2x the items/s of the loop.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from _harness import interleaved_medians, scenes, speedups  # benchmarks/_harness.py

from refine._compat import ensure_torchvision_importable

INSTRUCTIONS = ["make the circle blue", "remove the ball", "move it", "add a small red square in the top left corner"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mode", default="score_logit")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    ensure_torchvision_importable()
    from refine.rewards.backends.transformers_vlm import TransformersVLM
    from refine.rewards.mllm import MLLMJudge
    from refine.testing.tiny_vlm import tiny_vlm_dir

    judge = MLLMJudge(TransformersVLM(tiny_vlm_dir("qwen2_5_vl"), batch_size=args.batch), mode=args.mode, cache=False)
    n = args.batch
    batch = (scenes(n), scenes(n, offset=100), [INSTRUCTIONS[i % 4] for i in range(n)], [{}] * n)

    def batched():
        return judge(*batch)

    def loop():
        return [judge(*(part[i : i + 1] for part in batch)) for i in range(n)]

    stats = interleaved_medians({"batched": batched, "loop": loop}, items=n, repeats=args.repeats)

    result = {"mode": args.mode, "batch": n, "repeats": args.repeats, "threads": args.threads}
    result.update(stats)
    result.update(speedups(stats, fast="batched", slow="loop"))
    result["goal"] = ">= 2x"
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
