"""How far a LoRA that learnt nothing moves Edit-R1's held-out reward (the floor under the learning test's margin).

Usage:
    python benchmarks/edit_r1_random_lora.py                 # 4 shuffles, the shapes preset's evaluation
    python benchmarks/edit_r1_random_lora.py --shuffles 8 --lora refine/assets/edit-r1-shapes

What it runs: the held-out evaluation of examples/configs/edit_r1/shapes.yaml (its benchmark cases,
sampling seed, sampler and reward) on the bundled ShapeEdit editor, (1) alone, (2) with a trained
LoRA (default: the bundled one, 30 iterations), and (3) with that LoRA's entries shuffled within
each tensor: the same sizes and value distribution, no learned direction. The spread of (3) around
(1) is how far a run whose LoRA drifted without learning can move the reward, which is what
tests/edit_r1/test_learning_shapes.py's margin has to be read against. CPU time at 1 thread.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from refine.backbones.shapes import load_shapes_backbone
from refine.config import load_config
from refine.edit_r1.config import EditR1Config
from refine.edit_r1.data import evaluation_requests
from refine.edit_r1.evaluate import evaluate
from refine.edit_r1.lora import load_lora
from refine.registry import registry

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "examples/configs/edit_r1/shapes.yaml"))
    parser.add_argument("--lora", default=str(REPO / "refine/assets/edit-r1-shapes"))
    parser.add_argument("--shuffles", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)

    config = load_config(EditR1Config, args.config, [])
    reward = registry.build("reward", config.eval.reward or config.reward)
    requests = evaluation_requests(config.eval.benchmark, config.eval.cases, config.eval.seed, config.eval.categories)
    backbone = load_shapes_backbone()
    backbone.eval()

    def held_out() -> float:
        with torch.no_grad():
            return evaluate(backbone, requests, reward, sampler=config.rollout.sampler, steps=config.rollout.steps,
                            guidance=config.rollout.guidance, batch_size=config.rollout.max_batch).mean

    started = time.process_time()
    base = held_out()
    print(f"| editor alone | {base:.4f} | |")
    load_lora(backbone.transformer, args.lora)
    trained = {n: p.detach().clone() for n, p in backbone.transformer.named_parameters() if "lora_" in n}
    value = held_out()
    print(f"| + trained LoRA ({args.lora}) | {value:.4f} | {value - base:+.4f} |")
    for seed in range(args.shuffles):
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, parameter in backbone.transformer.named_parameters():
                if name in trained:
                    flat = trained[name].flatten()
                    parameter.copy_(flat[torch.randperm(flat.numel(), generator=generator)].view_as(parameter))
        value = held_out()
        print(f"| + the same LoRA, entries shuffled (seed {seed}) | {value:.4f} | {value - base:+.4f} |")
    print(f"{len(requests)} held-out cases; {time.process_time() - started:.0f} CPU-s at 1 thread")


if __name__ == "__main__":
    main()
