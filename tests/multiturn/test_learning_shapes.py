"""MT-EditFlow learns on ShapeEdit, checked in both reward directions from the bundled editor.

The preset (examples/configs/multiturn/shapes.yaml: ShapeEdit's exact judge per turn, IF and CC
against the original fused at the advantage level with (0.7, 0.3), the mean over turns broadcast
over the trajectory, NFT) shortened to a few CPU-minutes per run: 2 turns, 4 sequences x G = 4
trajectories per iteration, 4 DPM-Solver steps, 24 iterations. The held-out evaluation (16
shapes-mt-val sequences, fixed sampling seed, EMA LoRA) always scores the true, unflipped rewards;
the measured quantity is O at the last turn, ``mean sqrt(IF_K * CC_K)`` (the paper's headline
metric, CC against the original).

Measured with exactly this configuration (seed 0, 111 CPU-seconds per run), held-out O at turn 2
at iterations 0 / 8 / 16 / 24:
  as trained: 0.4995 / 0.5001 / 0.5104 / 0.4992   (-0.0003: held-out O does NOT rise in this budget)
  flipped:    0.4995 / 0.4944 / 0.4443 / 0.4062   (-0.0933)
On the training stream (the same sequences and seeds in both runs) O at turn 2 over iterations
17-24 was 0.458 as trained against 0.315 flipped.

So the test asserts what this budget shows, in both directions: the flipped run's held-out O falls
(the update follows the reward's sign on cases it never saw), and on the training stream the run
that follows the reward ends well above the run that follows its negation (both runs share every
sequence and seed and differ only in the sign, so an update blind to the reward cannot separate
them). That held-out O does not yet rise as trained is a known shortfall, recorded in
refine/multiturn/README.md, not hidden by a weaker margin.
"""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "examples" / "configs" / "multiturn" / "shapes.yaml"
COMMON = [
    "train.seed=0", "rollout.turns=2", "rollout.group_size=4", "rollout.sequences_per_iteration=4", "rollout.steps=4",
    "train.micro_batch=16", "eval.sequences=16", "optim.lr=3e-3",  # the rate the figures below were measured at
    "advantage.level=advantage",  # the fusion they were measured with (the preset now fuses at reward level)
    "log.checkpoint_every=0", "log.progress=false", "train.max_cpu_seconds=null",
]
ITERATIONS, EVAL_EVERY = 24, 8
MARGIN = 0.005  # held-out fall of the flipped run; measured -0.093
STREAM_GAP = 0.05  # training-stream O at the last turn, as trained minus flipped; measured +0.143


def _run(tmp_path, reward_scale):
    from refine.config import load_config
    from refine.multiturn.config import MultiTurnConfig
    from refine.multiturn.train import train

    overrides = [*COMMON, f"train.iterations={ITERATIONS}", f"eval.every={EVAL_EVERY}", f"reward.scale={reward_scale}"]
    config = load_config(MultiTurnConfig, PRESET, [*overrides, f"log.output_dir={tmp_path / str(reward_scale)}"])
    result = train(config)
    assert [i for i, _ in result.eval_history] == list(range(0, ITERATIONS + 1, EVAL_EVERY))
    late = [row["train_o_t2"] for row in result.metrics if row["iteration"] > ITERATIONS - 8]
    return result.eval_history[0][1], result.eval_history[-1][1], sum(late) / len(late)


@pytest.mark.slow(minutes=8)
def test_the_update_follows_the_reward_sign_in_both_directions(tmp_path, one_torch_thread):
    _, _, stream_trained = _run(tmp_path, 1.0)
    before, after, stream_flipped = _run(tmp_path, -1.0)
    assert after - before < -MARGIN, (before, after)
    assert stream_trained - stream_flipped > STREAM_GAP, (stream_trained, stream_flipped)
