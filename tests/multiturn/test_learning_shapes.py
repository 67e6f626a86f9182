"""MT-EditFlow learns on ShapeEdit: from the bundled editor, held-out O at the last turn climbs, and falls when flipped.

The preset (examples/configs/multiturn/shapes.yaml: ShapeEdit's exact judge per turn, IF and CC
against the original fused at the advantage level with (0.7, 0.3), the mean over turns broadcast
over the trajectory, NFT) shortened to a few CPU-minutes per run: 2 turns, 4 sequences x G = 4
trajectories per iteration, 4 DPM-Solver steps. The held-out evaluation (16 shapes-mt-val sequences,
fixed sampling seed, EMA LoRA) always scores the true, unflipped rewards; the measured quantity is
O at the last turn, ``mean sqrt(IF_K * CC_K)`` (the paper's headline metric, CC against the original).

Measured with exactly this configuration (seed 0, 111 CPU-seconds per run; 15.5 wall minutes at
load average 20 on the shared 2 cores), held-out O at turn 2 at iterations 0 / 8 / 16 / 24:
  as trained: 0.4995 / 0.5001 / 0.5104 / 0.4992   (-0.0003: NOT above the margin; this direction fails)
  flipped:    0.4995 / 0.4944 / 0.4443 / 0.4062   (-0.0933)
On the training stream (the same sequences and seeds in both runs) O at turn 2 over iterations
17-24 was 0.458 as trained against 0.315 flipped. The test is kept as specified, not weakened: the
positive direction needs a longer run or a tuned preset (see refine/multiturn/README.md). A run
that learnt nothing moves the metric by exactly 0 (discrete judge, deterministic evaluation).
"""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "examples" / "configs" / "multiturn" / "shapes.yaml"
COMMON = [
    "train.seed=0", "rollout.turns=2", "rollout.group_size=4", "rollout.sequences_per_iteration=4", "rollout.steps=4",
    "train.micro_batch=16", "eval.sequences=16", "log.checkpoint_every=0", "log.progress=false", "train.max_cpu_seconds=null",
]
ITERATIONS, EVAL_EVERY = 24, 8
MARGIN = 0.005


@pytest.mark.slow(minutes=4)
@pytest.mark.parametrize("reward_scale", [1.0, -1.0])
def test_last_turn_overall_climbs_from_the_bundled_editor_and_falls_when_flipped(tmp_path, reward_scale):
    from refine.config import load_config
    from refine.multiturn.config import MultiTurnConfig
    from refine.multiturn.train import train

    overrides = [*COMMON, f"train.iterations={ITERATIONS}", f"eval.every={EVAL_EVERY}", f"reward.scale={reward_scale}"]
    config = load_config(MultiTurnConfig, PRESET, [*overrides, f"log.output_dir={tmp_path}"])
    result = train(config)
    before, after = result.eval_history[0][1], result.eval_history[-1][1]
    assert [i for i, _ in result.eval_history] == list(range(0, ITERATIONS + 1, EVAL_EVERY))
    assert reward_scale * (after - before) > MARGIN, (reward_scale, before, after)
