"""Tiny MT-EditFlow runs for tests: dense toy per-turn rewards, a seconds-long config, a subprocess entry.

Example:
    >>> from refine.testing.multiturn import tiny_config
    >>> config = tiny_config("/tmp/run", iterations=3)
    >>> config.train.iterations, config.rollout.turns, config.rollout.sequences_per_iteration
    (3, 2, 2)

The entry (`python -m refine.testing.multiturn --output DIR [...]`, also under `torchrun`) trains
the tiny editor of `refine.testing.edit_r1` on two ShapeEdit stream sequences per iteration and
writes `result-rank{r}.json`: the weights digest, the iteration-1 row of the gathered training
metrics and the first-turn instructions this process rolled out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from refine.config import load_config
from refine.multiturn.config import MultiTurnConfig
from refine.multiturn.rewards import TurnRewards
from refine.rewards.base import RewardOutput
from refine.testing.edit_r1 import brightness_reward


def pixel_consistency(sources, outputs, instructions, metas) -> RewardOutput:
    """1 - mean absolute pixel difference to the original, in [0, 1]: a dense CC stand-in."""
    return RewardOutput([1.0 - float(np.abs(np.asarray(s, float) - np.asarray(o.resize(s.size), float)).mean() / 255.0)
                         for s, o in zip(sources, outputs)])


class RecordingReward:
    """Wraps a per-turn reward and records the instructions it scored (which sequences a process saw)."""

    def __init__(self, reward) -> None:
        self.reward, self.seen = reward, []

    def __call__(self, sources, outputs, instructions, metas) -> RewardOutput:
        self.seen.extend(instructions)
        return self.reward(sources, outputs, instructions, metas)


def tiny_config(output_dir: str | Path, iterations: int = 2, *overrides: str) -> MultiTurnConfig:
    """Two sequences x G = 2 trajectories x K = 2 turns, 2 Euler steps, LoRA rank 2: seconds per iteration."""
    return load_config(MultiTurnConfig, overrides=[
        "rollout.turns=2", "rollout.group_size=2", "rollout.sequences_per_iteration=2", "rollout.steps=2", "rollout.sampler=euler",
        f"train.iterations={iterations}", "train.micro_batch=4", "train.gradient_accumulation=1", "lora.rank=2", "optim.lr=1e-2",
        "eval.benchmark=null", "log.checkpoint_every=1", "log.progress=false", f"log.output_dir={output_dir}", *overrides,
    ])


def main(argv: list[str] | None = None) -> None:
    from refine.multiturn.train import train
    from refine.testing.edit_r1 import tiny_backbone
    from refine.training.accelerate_setup import make_accelerator

    parser = argparse.ArgumentParser(description="Train the tiny editor with MT-EditFlow (test helper).")
    parser.add_argument("--output", required=True)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--objective", default="nft", choices=["nft", "grpo"])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    extra = ["objective.kind=grpo", "rollout.sampler=sde"] if args.objective == "grpo" else []
    config = tiny_config(args.output, args.iterations, *extra)
    accelerator = make_accelerator("no", find_unused_parameters=True)
    instruction = RecordingReward(brightness_reward)
    result = train(config, backbone=tiny_backbone(), rewards=TurnRewards(instruction, pixel_consistency), accelerator=accelerator)
    first = next(row for row in result.metrics if row["iteration"] == 1)
    payload: dict[str, Any] = {
        "digest": result.weights_digest,
        "iteration_1": {k: v for k, v in first.items() if k.startswith("train_")},
        "instructions": instruction.seen,
        "lora": str(result.lora_path) if result.lora_path else None,
    }
    (Path(args.output) / f"result-rank{accelerator.process_index}.json").write_text(json.dumps(payload))


if __name__ == "__main__":
    main()
