"""Edit-R1 learns on ShapeEdit with either objective: from the bundled editor, the held-out O climbs,
and falls when the reward is flipped.

The presets (examples/configs/edit_r1/shapes.yaml: NFT, CFG-free; shapes_grpo.yaml: Flow-GRPO on
SDE rollouts at CFG 2) reward O = sqrt(IF x CC), 8 groups x 8 edits per iteration, lr 3e-3,
shortened to ITERATIONS iterations per run. The held-out evaluation (108 shapes-val cases, the
tuning split; fixed sampling seed; EMA LoRA; DPM-Solver 6 steps for both objectives so the two
tests cost the same) always scores the true, unflipped reward.

Evidence (benchmarks/RESULTS.md, "Issue 22"): with the previous reward, mean(IF, CC), and CFG-2
NFT rollouts, 24 iterations moved the held-out reward by +0.016 +- 0.009 / -0.024 +- 0.009 over
three seeds, and 12 flipped iterations were not enough; a run that learns nothing moves it by
exactly 0 (the judge is discrete, the evaluation deterministic). With O and CFG-free NFT, seed 0
moved +0.0021 after 8 iterations (under the margin), so the test keeps 24. The GRPO runs and the
NFT runs past iteration 8 could not finish on the shared 2 cores in the time of issue 22
(~300 s wall per iteration at ~15-25 CPU-s); their partial numbers are in RESULTS.md, and the
margin below is the previous test's, still to be confirmed for these presets.
"""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRESETS = REPO / "examples" / "configs" / "edit_r1"
COMMON = ["train.seed=0", "log.checkpoint_every=0", "log.sample_every=0", "eval.benchmark=shapes-val", "eval.cases=108",
          "eval.sampler=dpm", "eval.steps=6", "log.progress=false"]
ITERATIONS, EVAL_EVERY = 24, 8
MARGIN = 0.005


@pytest.mark.slow(minutes=10)
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
