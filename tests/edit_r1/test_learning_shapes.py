"""Edit-R1 follows its reward's sign on ShapeEdit: from the bundled editor, NFT with the reward
flipped lowers held-out O, and the run as trained ends above the flipped one.

The preset examples/configs/edit_r1/shapes.yaml with its earlier recipe pinned (NFT, CFG-free
rollouts and loss, all 6 schedule times, lr 3e-3; reward O = sqrt(IF x CC), 8 groups x 8 edits
per iteration) shortened to 16 iterations per run.
The held-out evaluation (108 shapes-val cases, the tuning split; fixed sampling seed; EMA LoRA;
DPM-Solver 6 steps) always scores the true, unflipped reward.

Evidence (benchmarks/RESULTS.md, "Issue 22", seed 0, held-out O at iterations 0 / 8 / 16 / 24):
NFT (CFG-free) 0.4485 / 0.4506 / 0.4533 / 0.4463 as trained, 0.4485 / 0.4473 / 0.4199 flipped;
Flow-GRPO 0.4914 / 0.5008 / 0.4962 as trained, 0.4914 / 0.4875 / 0.4939 flipped. So at this
budget neither objective raises held-out O by a clear margin as trained, and Flow-GRPO shows no
sign either way. What NFT does show at iteration 16, and what this test asserts: the flipped run
falls (-0.029) and the run as trained ends above it (+0.033). Both runs share seed 0 and differ
only in the reward's sign, so an update blind to the reward (or a sign error in the chain) cannot
pass both: a LoRA that drifts without learning moves the held-out reward by up to ~0.007
(`python benchmarks/edit_r1_random_lora.py`), the same way in both runs. A rise as trained is
issue 22's goal, for a tuning run to reach, not a margin this test pretends to.
The Flow-GRPO learning test is not in the suite: at this budget it has nothing to assert (the
numbers above); its mechanics are tested in tests/edit_r1/test_grpo.py and
tests/rollout/test_objectives.py.

This is one of the suite's longest tests; its `minutes` estimate makes tests/conftest.py start it
first on its own xdist worker.
"""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "examples" / "configs" / "edit_r1" / "shapes.yaml"
COMMON = ["train.seed=0", "log.checkpoint_every=0", "log.sample_every=0", "eval.benchmark=shapes-val", "eval.cases=108",
          "eval.sampler=dpm", "eval.steps=6", "log.progress=false",
          # the recipe the figures below were measured with (the preset has since moved to CFG-consistent
          # NFT at lr 1e-3, which rises too slowly to test in 16 iterations; benchmarks/RESULTS.md)
          "nft.cfg=free", "rollout.guidance=null", "eval.guidance=null", "optim.lr=3e-3", "nft.timesteps_per_sample=null"]
ITERATIONS, EVAL_EVERY = 16, 8
FALL = 0.005  # the flipped run's held-out fall; measured -0.029
GAP = 0.01  # as trained minus flipped at the end; measured +0.033


def _run(tmp_path, reward_scale):
    from refine.config import load_config
    from refine.edit_r1.config import EditR1Config
    from refine.edit_r1.train import train

    overrides = [*COMMON, f"train.iterations={ITERATIONS}", f"eval.every={EVAL_EVERY}", f"advantage.reward_scale={reward_scale}"]
    config = load_config(EditR1Config, PRESET, [*overrides, f"log.output_dir={tmp_path / str(reward_scale)}"])
    assert config.reward == {"kind": "shapes_overall"} and config.objective == "nft"
    result = train(config)
    assert [i for i, _ in result.eval_history] == list(range(0, ITERATIONS + 1, EVAL_EVERY))
    return result.eval_history[0][1], result.eval_history[-1][1]


@pytest.mark.slow(minutes=10)
def test_nft_follows_the_reward_sign_on_held_out_o(tmp_path, one_torch_thread):
    before, trained = _run(tmp_path, 1.0)
    _, flipped = _run(tmp_path, -1.0)
    assert flipped - before < -FALL, (before, flipped)
    assert trained - flipped > GAP, (trained, flipped)
