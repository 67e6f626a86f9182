"""Edit-R1 learns on ShapeEdit: from the bundled editor, the judge's held-out reward climbs, and falls when flipped.

The preset (examples/configs/edit_r1/shapes.yaml: reward mean(IF, CC) from ShapeEdit's judge, 8
groups x 8 edits per iteration, lr 3e-3) shortened to a few CPU-minutes per run: 24 iterations in
each direction (on the stop-8 editor 12 flipped iterations were enough; on the seven-stage one they
moved the reward by ~0.001, and the fall comes after iteration 12). The held-out evaluation (the
preset's 108 shapes-val cases, fixed sampling seed, EMA LoRA) always scores the true, unflipped
reward; 108 cases because a run moves the reward by ~0.01, about a 36-case evaluation's own wobble.

The margin comes from benchmarks/RESULTS.md ("It learns, and unlearns: the eight-stage editor"),
where this exact configuration was run for three seeds in both directions: every seed rose and
every flipped seed fell; a run that learnt nothing moves the held-out reward by exactly 0 (the
judge is discrete and the evaluation deterministic). Each run takes ~6.5 minutes: they are the
suite's longest tests, and their `minutes` estimate makes tests/conftest.py start them on different
xdist workers.
"""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "examples" / "configs" / "edit_r1" / "shapes.yaml"
# Learning is judged on the tuning split, never on the reported shapes-bench (the preset's default too).
COMMON = ["train.seed=0", "log.checkpoint_every=0", "log.sample_every=0", "eval.benchmark=shapes-val"]
# Measured on the eight-stage editor (benchmarks/RESULTS.md), seeds 0 / 1 / 2: as trained after 24
# iterations +0.0085 / +0.0252 / +0.0139; flipped after 24 -0.0208 / -0.0166 / -0.0335. On the
# seven-stage editor: +0.0098 / +0.0080 / +0.0151 and -0.0107 / -0.0156 / -0.0171 (after 12 flipped
# iterations -0.0009 / -0.0013 / -0.0038, not enough).
# Those figures were measured on shapes-bench; since issue 21 the test evaluates on shapes-val, where
# seed 0 starts at 0.556 (0.567 on shapes-bench). The margin has not been re-measured on shapes-val:
# a run of both directions on a machine at load ~20 took ~280 s per iteration and was stopped.
ITERATIONS, EVAL_EVERY = 24, 8
MARGIN = 0.005


@pytest.mark.slow(minutes=6.5)
@pytest.mark.parametrize("reward_scale", [1.0, -1.0])
def test_the_judge_reward_climbs_from_the_bundled_editor_and_falls_when_flipped(tmp_path, reward_scale):
    from refine.config import load_config
    from refine.edit_r1.config import EditR1Config
    from refine.edit_r1.train import train

    overrides = [*COMMON, f"train.iterations={ITERATIONS}", f"eval.every={EVAL_EVERY}", f"advantage.reward_scale={reward_scale}"]
    config = load_config(EditR1Config, PRESET, [*overrides, f"log.output_dir={tmp_path}"])
    result = train(config)
    before, after = result.eval_history[0][1], result.eval_history[-1][1]
    assert [i for i, _ in result.eval_history] == list(range(0, ITERATIONS + 1, EVAL_EVERY))
    assert reward_scale * (after - before) > MARGIN, (reward_scale, before, after)
