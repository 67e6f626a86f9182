"""How often a ShapeEdit judge reward varies within a rollout group of the bundled editor (what Edit-R1 can learn from).

Usage:
    python benchmarks/edit_r1_reward_density.py                    # 24 training requests x 8 samples
    python benchmarks/edit_r1_reward_density.py --requests 48 --editor runs/base-shapes/final

For each candidate reward built from the judge's IF and CC, prints the mean reward, the share of
groups whose within-group std exceeds 0.05 (a group without spread has zero advantage: it
teaches nothing, and the low-std filter drops it when its mean is high), and the mean std; then
each request's category with its eight IF and CC values. Rollouts as Edit-R1's preset: DPM-Solver,
6 steps, the editor's CFG, training requests of `refine.edit_r1.data.RequestSource` (seed 0).
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--editor", default=None, help="editor folder (default: the bundled one)")
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import numpy as np
    import torch

    from refine.backbones.shapes import load_shapes_backbone
    from refine.edit_r1.config import DataConfig
    from refine.edit_r1.data import RequestSource
    from refine.rollout.group import sample_group
    from refine.shapes.judge import judge_meta

    torch.set_num_threads(args.threads)
    backbone = load_shapes_backbone(args.editor)
    requests = RequestSource(DataConfig(kind="shapes", seed=0)).take(0, args.requests)
    out = sample_group(backbone, requests, group_size=args.group_size, sampler="dpm", steps=6, seed=0, max_batch=64)
    groups = []
    for request, images in zip(requests, out.images):
        scores = [judge_meta(request.meta, image) for image in images]
        category = request.meta["shapes_case"]["category"]
        groups.append((category, np.array([s.if_ for s in scores]), np.array([s.cc for s in scores])))
    rewards = {
        "mean(IF, CC)": lambda i, c: (i + c) / 2,
        "sqrt(IF x CC)": lambda i, c: np.sqrt(i * c),
        "IF": lambda i, c: i,
        "IF + CC / 4": lambda i, c: i + 0.25 * c,
    }
    print("| reward | mean | groups with std > 0.05 | mean within-group std |\n|---|---|---|---|")
    for name, reward in rewards.items():
        values = [reward(i, c) for _, i, c in groups]
        stds = np.array([v.std() for v in values])
        print(f"| {name} | {np.mean([v.mean() for v in values]):.3f} | {(stds > 0.05).mean():.2f} | {stds.mean():.3f} |")
    print()
    for category, i, c in groups:
        print(f"{category:10s} IF {np.round(i, 2).tolist()}  CC {np.round(c, 2).tolist()}")


if __name__ == "__main__":
    main()
