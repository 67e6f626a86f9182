"""Tiny Edit-R1 runs for tests: a small editor, toy rewards, a seconds-long config and a subprocess entry.

Example:
    >>> from refine.testing.edit_r1 import brightness_reward, tiny_config
    >>> from PIL import Image
    >>> brightness_reward([None], [Image.new("RGB", (4, 4), "white")], ["x"], [{}]).scores
    [1.0]
    >>> tiny_config("/tmp/run", iterations=3).train.iterations
    3

The subprocess entry (`python -m refine.testing.edit_r1 --output DIR [...]`, also under
`torchrun`) trains the tiny editor with the brightness reward and writes `result-rank{r}.json`
(weights digest, the requests each process rolled out). `--hang-after N` makes the reward block
forever after N calls, so a test can SIGKILL the process at a known point (after a checkpoint).
Under torchrun with `ACCELERATE_USE_FSDP=true FSDP_VERSION=2` in the environment the run is
sharded (FSDP2 on gloo); `read_checkpoint_policies` reads a checkpoint's policies either way.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from refine.errors import BackendError
from refine.rewards.base import RewardOutput


def brightness_reward(sources, outputs, instructions, metas) -> RewardOutput:
    """Mean pixel brightness of each output in [0, 1]: a dense reward any editor can climb."""
    return RewardOutput([float(np.asarray(o.convert("L"), dtype=np.float64).mean() / 255.0) for o in outputs])


class FlakyReward:
    """Wraps a reward; call numbers in `fail_calls` raise `BackendError`, items in `none_items` score None.

    >>> flaky = FlakyReward(brightness_reward, fail_calls={1})
    >>> from PIL import Image
    >>> white = Image.new("RGB", (4, 4), "white")
    >>> flaky([white], [white], ["x"], [{}]).scores
    [1.0]
    >>> flaky([white], [white], ["x"], [{}])
    Traceback (most recent call last):
    ...
    refine.errors.BackendError: judge unreachable (simulated failure of call 1)
    """

    name = "flaky"

    def __init__(self, reward, fail_calls: set[int] = frozenset(), none_items: set[int] = frozenset(), fail_from: int | None = None) -> None:
        self.reward = reward
        self.fail_calls = set(fail_calls)
        self.none_items = set(none_items)
        self.fail_from = fail_from
        self.calls = 0

    def __call__(self, sources, outputs, instructions, metas) -> RewardOutput:
        call = self.calls
        self.calls += 1
        if call in self.fail_calls or (self.fail_from is not None and call >= self.fail_from):
            raise BackendError(f"judge unreachable (simulated failure of call {call})")
        result = self.reward(sources, outputs, instructions, metas)
        scores = [None if i in self.none_items else s for i, s in enumerate(result.scores)]
        return RewardOutput(scores, result.details)


class HangingReward:
    """Wraps a reward and blocks forever from call `after` on (a stand-in for a run killed mid-iteration)."""

    def __init__(self, reward, after: int) -> None:
        self.reward, self.after, self.calls = reward, after, 0

    def __call__(self, sources, outputs, instructions, metas) -> RewardOutput:
        self.calls += 1
        if self.calls > self.after:
            while True:
                time.sleep(3600)
        return self.reward(sources, outputs, instructions, metas)


def tiny_backbone(seed: int = 0):
    """A 1-layer, 32-wide ShapeEdit editor with random weights (CFG 2, as the bundled one)."""
    from refine.backbones.shapes import build_shapes_backbone

    return build_shapes_backbone(layers=1, width=32, heads=2, text_layers=1, seed=seed)


def tiny_config(output_dir: str | Path, iterations: int = 2, **overrides: Any):
    """An `EditR1Config` that runs an iteration in well under a second on the tiny editor.

    `overrides` are dotted keys with `__` for dots: ``tiny_config(out, nft__kl_weight=0)``.
    """
    from refine.config import load_config
    from refine.edit_r1.config import EditR1Config

    settings = {
        "rollout.group_size": 4,
        "rollout.groups_per_iteration": 2,
        "rollout.steps": 2,
        "rollout.max_batch": 16,
        "train.micro_batch": 4,
        "train.iterations": iterations,
        "lora.rank": 4,
        "eval.cases": 4,
        "eval.every": 0,
        "log.output_dir": str(output_dir),
        "log.checkpoint_every": 0,
        "log.progress": False,
    }
    settings.update({k.replace("__", "."): v for k, v in overrides.items()})
    return load_config(EditR1Config, overrides=[f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in settings.items()])


def read_checkpoint_policies(folder: str | Path) -> dict[str, dict[str, Any]]:
    """{"trained"|"old"|"ema": {name: tensor}} of a checkpoint, replicated (safetensors) or sharded (distributed checkpoint).

    A sharded checkpoint is read whole in this one process (torch's `dcp_to_torch_save`), which is
    also the proof that its shards add up to full tensors.
    """
    import tempfile

    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    from refine.training.checkpoint import read_tensors

    folder = Path(folder)
    if not (folder / "policies").is_dir():
        return {group: read_tensors(folder, group) for group in ("trained", "old", "ema")}
    with tempfile.TemporaryDirectory() as tmp:
        dcp_to_torch_save(str(folder / "policies"), f"{tmp}/policies.pt")
        return torch.load(f"{tmp}/policies.pt", weights_only=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the tiny ShapeEdit editor with Edit-R1 (test helper).")
    parser.add_argument("--output", required=True)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--checkpoint-every", type=int, default=0)
    parser.add_argument("--hang-after", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--finetune", default="lora", choices=["lora", "full"])
    parser.add_argument("--frozen", default="replicate", choices=["replicate", "shard"])
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--objective", default="nft", choices=["nft", "grpo"], help="grpo: Flow-GRPO on 3 SDE steps")
    parser.add_argument("--micro-batch", type=int, default=4, help="train.micro_batch (below 4: gradient accumulation)")
    parser.add_argument("--eval-cases", type=int, default=0, help="held-out cases evaluated at iterations 0 and last (0: none)")
    parser.add_argument("--old-decay-rate", type=float, default=None, help="policy.old_decay_rate (default: the config's)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from refine.edit_r1.train import train

    reward = brightness_reward if args.hang_after is None else HangingReward(brightness_reward, args.hang_after)
    config = tiny_config(
        args.output, args.iterations, log__checkpoint_every=args.checkpoint_every, rollout__groups_per_iteration=args.groups,
        train__finetune=args.finetune, train__micro_batch=args.micro_batch, train__frozen=args.frozen,
        train__gradient_checkpointing=args.gradient_checkpointing,
        **({} if args.old_decay_rate is None else {"policy__old_decay_rate": args.old_decay_rate}),
        **({"eval__cases": args.eval_cases} if args.eval_cases else {"eval__benchmark": None}),
        **({"objective": "grpo", "rollout__sampler": "sde", "rollout__steps": 3} if args.objective == "grpo" else {}),
    )
    result = train(config, backbone=tiny_backbone(), reward=reward)
    from accelerate import PartialState

    rank = PartialState().process_index
    rows = [json.loads(line) for line in (Path(args.output) / "rollouts" / f"rank{rank}.jsonl").read_text().splitlines()]
    # LoRA B matrices start at zero: a positive sum shows the update really moved the weights.
    trained = read_checkpoint_policies(Path(args.output) / f"checkpoint-{args.iterations:06d}")["trained"]
    moved = float(sum(v.abs().sum() for k, v in trained.items() if "lora_B" in k))
    (Path(args.output) / f"result-rank{rank}.json").write_text(
        json.dumps({"digest": result.weights_digest, "eval_history": result.eval_history, "requests": [r["requests"] for r in rows], "iterations": result.iterations,
                    "lora_b_abs_sum": moved})
    )


if __name__ == "__main__":
    main()
