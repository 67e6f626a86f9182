"""Edit-R1 learns on ShapeEdit with either objective: from the bundled editor, the held-out O climbs,
and falls when the reward is flipped.

The presets (examples/configs/edit_r1/shapes.yaml: NFT, CFG-free; shapes_grpo.yaml: Flow-GRPO on
SDE rollouts at CFG 2) reward O = sqrt(IF x CC), 8 groups x 8 edits per iteration, lr 3e-3,
shortened to ITERATIONS iterations per run. The held-out evaluation (108 shapes-val cases, the
tuning split; fixed sampling seed; EMA LoRA; DPM-Solver 6 steps for both objectives so the two
tests cost the same) always scores the true, unflipped reward.

Evidence (benchmarks/RESULTS.md, "Issue 22", seed 0, held-out O at iterations 0 / 8 / 16 / 24):
NFT (CFG-free) 0.4485 / 0.4506 / 0.4533 / 0.4463 as trained, 0.4485 / 0.4473 / 0.4199 flipped;
Flow-GRPO 0.4914 / 0.5008 / 0.4962 as trained, 0.4914 / 0.4875 / 0.4939 flipped. Neither objective
yet moves O the right way in both directions at one budget, so the test is skipped with those
numbers rather than weakened: the preset's tuning run (issue 22, section 4) must first find a
setting that learns O, then this test takes its iterations and margin from that run's seeds.
"""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRESETS = REPO / "examples" / "configs" / "edit_r1"
COMMON = ["train.seed=0", "log.checkpoint_every=0", "log.sample_every=0", "eval.benchmark=shapes-val", "eval.cases=108",
          "eval.sampler=dpm", "eval.steps=6", "log.progress=false"]
ITERATIONS, EVAL_EVERY = 24, 8
MARGIN = 0.005


@pytest.mark.skip(reason="O does not yet move both ways at this budget (benchmarks/RESULTS.md, issue 22)")
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
