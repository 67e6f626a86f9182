"""Choose among MT-EditFlow checkpoints on shapes-mt-val at fresh evaluation seeds (issue 25).

    python benchmarks/multiturn_select.py runs/mt-lr1e-3/checkpoint-000075/lora runs/mt-rl/checkpoint-000080/lora \
        --seeds 1235 1236 --out runs/mt-select

A training run evaluates its EMA LoRA every few iterations at one fixed evaluation seed and keeps
every evaluated checkpoint; picking the highest of ~20 such noisy numbers favours a lucky one (the
bundled LoRA scored +0.074 on val at its seed and +0.046 on the reported split). This script
re-evaluates a short list of candidates at evaluation seeds the runs never used, on all 120
shapes-mt-val sequences (the tuning split; the reported shapes-mt is not touched), and reports each
one's O at turns 1 and 3 paired per sequence against the base editor at the same seeds, the seeds
averaged within a sequence (percentile bootstrap over sequences, `refine.compare.stats.mean_ci`).
The evaluation is `multiturn_ablations.evaluate_lora`, the trainer's own (`refine.multiturn.evaluate.evaluate`: the preset's sampler and
steps, the graded exact judge, 3 turns). Results are cached per (candidate, seed) under `--out`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from refine.compare.stats import mean_ci
from refine.config import load_config
from refine.multiturn.config import MultiTurnConfig
from refine.multiturn.data import evaluation_sequences
from refine.presets import find_preset

from multiturn_ablations import evaluate_lora  # the same per-sequence evaluation; this folder is on sys.path when run as a script

PRESET = "multiturn/shapes"


def cached(out: Path, lora: Path | None, seed: int, config, sequences) -> dict[str, list[float]]:
    key = "base" if lora is None else hashlib.sha1(str(lora.resolve()).encode()).hexdigest()[:12]
    path = out / f"{key}-seed{seed}.json"
    if not path.is_file():
        print(f"[{time.strftime('%H:%M:%S')}] evaluate {lora or 'base'} at seed {seed}", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(evaluate_lora(lora, config, sequences, seed)))
    return json.loads(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="+", type=Path, help="LoRA folders (a checkpoint's lora/ or a run's lora/)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1235, 1236], help="evaluation seeds the runs did not use (theirs: 1234)")
    parser.add_argument("--out", type=Path, default=Path("runs/mt-select"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config(MultiTurnConfig, find_preset(PRESET))
    sequences = evaluation_sequences("shapes-mt-val", 120)
    base = {s: cached(args.out, None, s, config, sequences) for s in args.seeds}
    print(f"base, 120 shapes-mt-val sequences x seeds {args.seeds}: O_3 {np.mean([base[s]['o_t3'] for s in args.seeds]):.4f}")
    print("| candidate | O_3 | delta O_3 [95%] | delta O_1 [95%] | delta O_3 per seed |\n|---|---|---|---|---|")
    for lora in args.candidates:
        runs = {s: cached(args.out, lora, s, config, sequences) for s in args.seeds}
        cells = []
        for metric in ("o_t3", "o_t1"):
            deltas = np.mean([np.array(runs[s][metric]) - np.array(base[s][metric]) for s in args.seeds], axis=0)
            ci = mean_ci(deltas, resamples=10_000)
            cells.append(f"{ci.mean:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}]")
        per_seed = ", ".join(f"{np.mean(np.array(runs[s]['o_t3']) - np.array(base[s]['o_t3'])):+.3f}" for s in args.seeds)
        o3 = np.mean([runs[s]["o_t3"] for s in args.seeds])
        print(f"| {lora} | {o3:.4f} | {cells[0]} | {cells[1]} | {per_seed} |", flush=True)


if __name__ == "__main__":
    main()
