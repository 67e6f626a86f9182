"""Train a strategy from Python (Edit-R1 on ShapeEdit), then compare the trained LoRA with the base editor.

Usage:
    python examples/train_strategy.py               # 20 iterations on the bundled editor, then a 36-case comparison
    python examples/train_strategy.py --quick       # 1 tiny iteration and a 4-case comparison (what the test runs)
    python examples/train_strategy.py --out runs/my_edit_r1

Every strategy trains the same way: build its config (the pydantic model behind
`refine train <strategy> --config ...`), call its `train`, and use what it wrote. Training resumes
from the latest checkpoint in the output folder when run again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from refine.compare import run_compare
from refine.config import load_config
from refine.edit_r1.config import EditR1Config
from refine.edit_r1.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 tiny iteration, 4-case comparison")
    parser.add_argument("--out", default="runs/example_edit_r1", help="output folder (training run and comparison)")
    args = parser.parse_args()
    out = Path(args.out)

    # 1. the config: defaults are the paper's, scaled down for ShapeEdit on a CPU
    overrides = [
        f"log.output_dir={out / 'train'}",
        "rollout.steps=6",
        "rollout.group_size=4",
        "rollout.groups_per_iteration=4",
        "train.micro_batch=4",
        "train.iterations=20",
        "lora.rank=8",
        "eval.cases=16",
    ]
    if args.quick:
        overrides += [
            "train.iterations=1", "rollout.steps=2", "rollout.group_size=2", "rollout.groups_per_iteration=2",
            "train.micro_batch=2", "eval.cases=2", "eval.every=0", "log.checkpoint_every=0", "log.progress=false",
        ]
    config = load_config(EditR1Config, overrides=overrides)

    # 2. train: rollouts, judge rewards, NFT updates, EMA, checkpoints; returns where the LoRA is
    result = train(config)
    print(f"trained {result.iterations} iteration(s); held-out score by iteration: {result.eval_history}")
    print(f"LoRA: {result.lora_path}")

    # 3. use it: the LoRA is a refiner like any other, so comparing it is one more entry
    comparison = {
        "benchmark": "shapes-bench",
        "limit": 4 if args.quick else 36,
        "editor": {"kind": "shapes", "flow": {"sampler": "euler", "steps": 4 if args.quick else 8}},
        "entries": {"base": {}, "+my_edit_r1": {"refiners": [{"kind": "edit_r1", "path": str(result.lora_path)}]}},
        "out_dir": str(out / "compare"),
        "progress": not args.quick,
    }
    run = run_compare(comparison)
    print(f"report: {run.files['html']}")


if __name__ == "__main__":
    main()
