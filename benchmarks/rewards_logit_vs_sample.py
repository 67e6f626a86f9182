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
from pathlib import Path

import torch
from _harness import interleaved_medians, scenes, speedups  # benchmarks/_harness.py

from refine._compat import ensure_torchvision_importable


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
    runs = {name: (lambda judge=judge: judge(*batch)) for name, judge in judges.items()}
    stats = interleaved_medians(runs, items=args.batch, repeats=args.repeats)

    result = {"batch": args.batch, "new_tokens": args.new_tokens, "repeats": args.repeats, "threads": args.threads}
    result.update(stats)
    result.update(speedups(stats, fast="score_logit", slow="score_sample_cot"))
    result["goal"] = ">= 5x"
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
