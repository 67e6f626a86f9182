"""Edit-R1 learns on ShapeEdit with either objective: from the bundled editor, the held-out O climbs,
and falls when the reward is flipped.

The presets (examples/configs/edit_r1/shapes.yaml: NFT, CFG-free; shapes_grpo.yaml: Flow-GRPO on
SDE rollouts at CFG 2) reward O = sqrt(IF x CC), 8 groups x 8 edits per iteration, lr 3e-3,
shortened to ITERATIONS iterations per run. The held-out evaluation (108 shapes-val cases, the
tuning split; fixed sampling seed; EMA LoRA; DPM-Solver 6 steps for both objectives so the two
tests cost the same) always scores the true, unflipped reward.

Margins come from the runs in benchmarks/RESULTS.md ("NFT and Flow-GRPO learn O on shapes-val").
What the margin guards against, and what it does not: a run whose weights did not move scores
exactly its iteration-0 reward (the judge is discrete, the evaluation deterministic), but a LoRA
that drifted without learning does not: one of the trained size with no learned direction moves
the held-out reward by up to ~0.007 (`python benchmarks/edit_r1_random_lora.py`, benchmarks/
RESULTS.md "How far a LoRA that learnt nothing moves"), as far as the margin. One direction alone
therefore does not prove learning; the pair does: both runs share seed 0 and differ only in the
reward's sign, so an update blind to the reward drifts the same way in both and fails one of them.
These are the suite's longest tests; their `minutes` estimate makes
tests/conftest.py start them on different xdist workers.
"""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRESETS = REPO / "examples" / "configs" / "edit_r1"
COMMON = ["train.seed=0", "log.checkpoint_every=0", "log.sample_every=0", "eval.benchmark=shapes-val", "eval.cases=108",
          "eval.sampler=dpm", "eval.steps=6", "log.progress=false"]
ITERATIONS, EVAL_EVERY = 16, 8
MARGIN = 0.005


@pytest.mark.slow(minutes=6)
@pytest.mark.parametrize("preset", ["shapes", "shapes_grpo"])
@pytest.mark.parametrize("reward_scale", [1.0, -1.0])
def test_held_out_o_climbs_from_the_bundled_editor_and_falls_when_flipped(tmp_path, preset, reward_scale):
    from refine.config import load_config
    from refine.edit_r1.config import EditR1Config
    from refine.edit_r1.train import train

    overrides = [*COMMON, f"train.iterations={ITERATIONS}", f"eval.every={EVAL_EVERY}", f"advantage.reward_scale={reward_scale}"]
    config = load_config(EditR1Config, PRESETS / f"{preset}.yaml", [*overrides, f"log.output_dir={tmp_path}"])
    assert config.reward == {"kind": "shapes_overall"}
    result = train(config)
    before, after = result.eval_history[0][1], result.eval_history[-1][1]
    assert [i for i, _ in result.eval_history] == list(range(0, ITERATIONS + 1, EVAL_EVERY))
    assert reward_scale * (after - before) > MARGIN, (preset, reward_scale, before, after)
