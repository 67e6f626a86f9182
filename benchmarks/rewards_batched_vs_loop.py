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
import statistics
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from refine.testing.torchvision_compat import ensure_torchvision_importable

INSTRUCTIONS = ["make the circle blue", "remove the ball", "move it", "add a small red square in the top left corner"]


def scenes(n: int, offset: int = 0) -> list[Image.Image]:
    colors = ["white", "red", "green", "blue", "yellow", "purple", "orange", "gray"]
    images = []
    for i in range(offset, offset + n):
        image = Image.new("RGB", (32, 32), colors[i % 8])
        ImageDraw.Draw(image).ellipse([i % 16, i % 11, i % 16 + 12, i % 11 + 12], fill=colors[(i + 3) % 8])
        images.append(image)
    return images


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


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

    runs = {"batched": batched, "loop": loop}
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn))

    result = {"mode": args.mode, "batch": n, "repeats": args.repeats, "threads": args.threads}
    for name, values in times.items():
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        result[name] = {"wall_s": round(wall, 4), "cpu_s": round(cpu, 4), "items_per_s_wall": round(n / wall, 1),
                        "items_per_s_cpu": round(n / cpu, 1)}
    result["speedup_wall"] = round(result["batched"]["items_per_s_wall"] / result["loop"]["items_per_s_wall"], 1)
    result["speedup_cpu"] = round(result["batched"]["items_per_s_cpu"] / result["loop"]["items_per_s_cpu"], 1)
    result["goal"] = ">= 2x"
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
