"""ShapeEdit benchmark: how fast the frozen splits are generated and judged, and how right the judge is.

Run:
    python benchmarks/shapes_bench.py            # add --size 64 for the 64x64 variant, --json out.json

Goal (issue 3): generating shapes-bench and judging all its targets takes < 10 s on 2 CPU cores.
Both wall-clock and process CPU seconds are printed (on a shared machine wall time includes waiting).

It also reports the judge's agreement with the ground truth on the whole split (exact targets,
unedited sources, targets with sigma 8/255 noise and a 1-pixel Gaussian blur, random noise) and
compares it with the alternative a user would reach for first, pixel MSE to the target image: given a
correct-but-degraded output and an exact-but-wrong one (the unedited source), which does each metric
prefer?
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from refine.shapes.data import _split, load_split
from refine.shapes.degrade import degrade, noise_image
from refine.shapes.judge import judge_edit, judge_sequence, success_rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    figures: dict[str, object] = {"size": args.size}

    # 1. Generate shapes-bench from scratch and judge every exact target (the < 10 s goal).
    _split.cache_clear()
    start, cpu_start = time.perf_counter(), time.process_time()
    bench = load_split("shapes-bench", args.size)
    generated = time.perf_counter()
    exact = [judge_edit(c.source_image, c.target_image, c) for c in bench]
    judged, cpu_judged = time.perf_counter(), time.process_time()
    figures["bench_cases"] = len(bench)
    figures["bench_generate_s"] = round(generated - start, 3)
    figures["bench_judge_targets_s"] = round(judged - generated, 3)
    figures["bench_generate_and_judge_s"] = round(judged - start, 3)
    # CPU seconds of this process: the wall figure on a shared machine includes waiting for a core.
    figures["bench_generate_and_judge_cpu_s"] = round(cpu_judged - cpu_start, 3)
    figures["exact_if_cc_all_one"] = all(s.if_ == 1.0 and s.cc == 1.0 for s in exact)

    # 2. Judge correctness on the whole split.
    unedited = [judge_edit(c.source_image, c.source_image, c) for c in bench]
    degraded_images = [degrade(c.target_image, noise=8 / 255, blur=1.0, seed=i) for i, c in enumerate(bench)]
    t0 = time.perf_counter()
    noisy = [judge_edit(c.source_image, image, c) for c, image in zip(bench, degraded_images)]
    figures["degraded_judge_ms_per_image"] = round(1000 * (time.perf_counter() - t0) / len(bench), 2)
    randoms = [judge_edit(c.source_image, noise_image(args.size, seed=i), c) for i, c in enumerate(bench)]
    figures["unedited_if_max"] = max(s.if_ for s in unedited)
    figures["degraded_if_min"] = min(s.if_ for s in noisy)
    figures["degraded_cc_min"] = min(s.cc for s in noisy)
    figures["degraded_pq_mean"] = round(statistics.mean(s.pq for s in noisy), 3)
    figures["random_noise_overall_max"] = round(max(s.overall for s in randoms), 3)

    # 3. Against pixel MSE to the target: prefer the degraded correct output over the unedited source?
    def mse(image, case) -> float:
        return float(((np.asarray(image, float) - np.asarray(case.target_image, float)) ** 2).mean())

    judge_right = sum(n.overall > u.overall for n, u in zip(noisy, unedited))
    mse_right = sum(mse(img, c) < mse(c.source_image, c) for img, c in zip(degraded_images, bench))
    figures["prefers_correct_degraded_judge"] = round(judge_right / len(bench), 3)
    figures["prefers_correct_degraded_pixel_mse"] = round(mse_right / len(bench), 3)

    # 4. Multi-turn split.
    _split.cache_clear()
    start = time.perf_counter()
    mt = load_split("shapes-mt", args.size)
    generated = time.perf_counter()
    scores = [judge_sequence(seq, seq.target_images) for seq in mt]
    figures["mt_sequences"] = len(mt)
    figures["mt_generate_s"] = round(generated - start, 3)
    figures["mt_judge_s"] = round(time.perf_counter() - generated, 3)
    figures["mt_exact_success_rates"] = success_rates(scores)

    for key, value in figures.items():
        print(f"{key:40s} {value}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
