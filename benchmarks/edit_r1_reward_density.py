"""How often a ShapeEdit judge reward varies within a rollout group of the bundled editor (what Edit-R1 can learn from).

Usage:
    python benchmarks/edit_r1_reward_density.py                    # 24 training requests x 8 samples
    python benchmarks/edit_r1_reward_density.py --requests 48 --editor runs/base-shapes/final
    python benchmarks/edit_r1_reward_density.py --requests 48 --data-seed 7 --seed 3 \
        --vlm refine/assets/shapes-vlm --vlm-modes score_logit score_logit_cot

For each candidate reward built from the judge's IF and CC, prints the mean reward, the share of
groups whose within-group std exceeds 0.05 (a group without spread has zero advantage: it
teaches nothing, and the low-std filter drops it when its mean is high), and the mean std; then
each request's category with its eight IF and CC values. Rollouts as Edit-R1's preset: DPM-Solver,
6 steps, the editor's CFG, training requests of `refine.edit_r1.data.RequestSource` (`--data-seed`).

With `--vlm`, each of `--vlm-modes` of that MLLM judge (`refine.rewards.mllm.MLLMJudge` on a local
`TransformersVLM`) also scores every rollout, and the script prints how often it orders two rollouts
of one request as O does (pairs whose O differ by >= 0.05; `refine.compare.stats.same_input_pairwise_accuracy`)
and its mean within-group std: what NFT's advantages would learn from with that judge as the reward.
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--editor", default=None, help="editor folder (default: the bundled one)")
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-seed", type=int, default=0, help="RequestSource seed of the training requests")
    parser.add_argument("--seed", type=int, default=0, help="rollout sampling seed")
    parser.add_argument("--vlm", default=None, help="an MLLM judge's model folder, scored beside O (default: none)")
    parser.add_argument("--vlm-modes", nargs="+", default=["score_logit"])
    args = parser.parse_args()

    import numpy as np
    import torch

    from refine._compat import ensure_torchvision_importable
    from refine.backbones.shapes import load_shapes_backbone
    from refine.compare.stats import same_input_pairwise_accuracy
    from refine.edit_r1.config import DataConfig
    from refine.edit_r1.data import RequestSource
    from refine.rewards.backends.transformers_vlm import TransformersVLM
    from refine.rewards.mllm import MLLMJudge
    from refine.rollout.group import sample_group
    from refine.shapes.judge import judge_meta

    torch.set_num_threads(args.threads)
    backbone = load_shapes_backbone(args.editor)
    requests = RequestSource(DataConfig(kind="shapes", seed=args.data_seed)).take(0, args.requests)
    out = sample_group(backbone, requests, group_size=args.group_size, sampler="dpm", steps=6, seed=args.seed, max_batch=64)
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

    if args.vlm:
        ensure_torchvision_importable()  # transformers' VL processors import torchvision
        backend = TransformersVLM(args.vlm)
        items = [(request, image) for request, images in zip(requests, out.images) for image in images]
        overall = [rewards["sqrt(IF x CC)"](i, c) for _, i, c in groups]  # O per rollout, group by group
        print(f"\n| {args.vlm} mode | within-group agreement with O (gap >= 0.05) | mean within-group std |\n|---|---|---|")
        for mode in args.vlm_modes:
            judged = MLLMJudge(backend, mode=mode)([r.image for r, _ in items], [image for _, image in items],
                                                   [r.instruction for r, _ in items], [r.meta for r, _ in items]).scores
            per_group = [judged[k * args.group_size:(k + 1) * args.group_size] for k in range(len(requests))]
            agreement, pairs = same_input_pairwise_accuracy(
                ([(s, o) for s, o in zip(scores, truth) if s is not None] for scores, truth in zip(per_group, overall)), min_gap=0.05)
            stds = [np.std([s for s in scores if s is not None]) for scores in per_group]
            print(f"| {mode} | {agreement or 0:.3f} of {pairs} pairs | {np.mean(stds):.4f} |")


if __name__ == "__main__":
    main()
