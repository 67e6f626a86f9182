"""Judge throughput: Edit-R1's score_logit (one prefill) against sampling a reasoned score (generation).

Run:  python benchmarks/rewards_logit_vs_sample.py [--batch 32] [--new-tokens 64] [--repeats 5] [--threads 2]

Same tiny Qwen2.5-VL judge (refine.testing.tiny_vlm, random weights: cost does not depend on the
weights), same batch of `batch` (source, edited, instruction) items with 32x32 images:

* score_logit: `MLLMJudge(mode="score_logit")`, one batched forward pass, last position only;
* score_sample_cot: `MLLMJudge(mode="score_sample_cot")`, reasoning then score, generating
  exactly `new_tokens` tokens per item (min_new_tokens forces the length: a random model would
  stop at random points), batched.

Caching is off. The two are interleaved `repeats` times after a warm-up; the median is reported
as wall time and as this process's CPU time (on a shared machine other jobs inflate wall time,
not CPU time). Goal: score_logit >= 5x the items/s of score_sample_cot.
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
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    ensure_torchvision_importable()
    from refine.rewards.backends.transformers_vlm import TransformersVLM
    from refine.rewards.mllm import MLLMJudge
    from refine.testing.tiny_vlm import tiny_vlm_dir

    logit_backend = TransformersVLM(tiny_vlm_dir("qwen2_5_vl"), batch_size=args.batch)
    sample_backend = TransformersVLM(
        logit_backend.model, logit_backend.processor, batch_size=args.batch,
        generation_kwargs={"min_new_tokens": args.new_tokens},
    )
    judges = {
        "score_logit": MLLMJudge(logit_backend, mode="score_logit", cache=False),
        "score_sample_cot": MLLMJudge(sample_backend, mode="score_sample_cot", max_new_tokens=args.new_tokens, cache=False),
    }
    batch = (scenes(args.batch), scenes(args.batch, offset=100), ["make the circle blue"] * args.batch,
             [{"task_type": "recolor"}] * args.batch)
    for judge in judges.values():  # warm-up
        judge(*batch)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in judges}
    for _ in range(args.repeats):
        for name, judge in judges.items():
            times[name].append(timed(lambda: judge(*batch)))

    result = {"batch": args.batch, "new_tokens": args.new_tokens, "repeats": args.repeats, "threads": args.threads}
    for name, values in times.items():
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        result[name] = {"wall_s": round(wall, 4), "cpu_s": round(cpu, 4), "items_per_s_wall": round(args.batch / wall, 1),
                        "items_per_s_cpu": round(args.batch / cpu, 1)}
    result["speedup_wall"] = round(result["score_logit"]["items_per_s_wall"] / result["score_sample_cot"]["items_per_s_wall"], 1)
    result["speedup_cpu"] = round(result["score_logit"]["items_per_s_cpu"] / result["score_sample_cot"]["items_per_s_cpu"], 1)
    result["goal"] = ">= 5x"
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
