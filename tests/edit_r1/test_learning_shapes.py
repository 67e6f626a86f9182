"""Edit-R1 learns on ShapeEdit: from the bundled editor, the judge's held-out reward climbs, and falls when flipped.

The preset (examples/configs/edit_r1/shapes.yaml: reward mean(IF, CC) from ShapeEdit's judge, 8
groups x 8 edits per iteration) shortened to ~5 CPU-minutes per run: 12 iterations at lr 3e-3.
The held-out evaluation (36 shapes-bench cases, fixed sampling seed, EMA LoRA) always scores the
true, unflipped reward.

The margin comes from benchmarks/RESULTS.md ("Edit-R1 on ShapeEdit: it learns, and unlearns"),
where this exact configuration was run for three seeds in both directions: every seed rose and
every flipped seed fell; a run that learnt nothing moves the held-out reward by exactly 0 (the
judge is discrete and the evaluation deterministic). The two runs take ~5 minutes each: they are
the suite's longest tests, and `--dist worksteal` (pyproject addopts) lets the second xdist
worker take one of them instead of queueing both on one.
"""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "examples" / "configs" / "edit_r1" / "shapes.yaml"
SHORT = ["optim.lr=3e-3", "train.iterations=12", "eval.every=4", "train.seed=0", "log.checkpoint_every=0", "log.sample_every=0"]
# Measured (benchmarks/RESULTS.md), seeds 0 / 1 / 2 after 12 iterations: +0.0209 / +0.0148 / +0.0065 as
# trained, -0.0129 / -0.0236 / -0.0156 flipped. The margin holds for every seed measured.
MARGIN = 0.005


@pytest.mark.slow
@pytest.mark.parametrize("reward_scale", [1.0, -1.0])
def test_the_judge_reward_climbs_from_the_bundled_editor_and_falls_when_flipped(tmp_path, reward_scale):
    from refine.config import load_config
    from refine.edit_r1.config import EditR1Config
    from refine.edit_r1.train import train

    config = load_config(EditR1Config, PRESET, [*SHORT, f"advantage.reward_scale={reward_scale}", f"log.output_dir={tmp_path}"])
    result = train(config)
    before, after = result.eval_history[0][1], result.eval_history[-1][1]
    assert [i for i, _ in result.eval_history] == [0, 4, 8, 12]
    assert reward_scale * (after - before) > MARGIN, (reward_scale, before, after)
