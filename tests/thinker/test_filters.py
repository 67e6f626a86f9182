"""The paper's data rules on hand-built trajectories, with every expected value worked out by hand."""

from dataclasses import replace

import pytest

from refine.errors import InputError
from refine.thinker.filters import Sample, balance, best_step, keeps, score_variance, split_by_variance, truncate, unroll
from refine.thinker.trajectories import Critique, Trajectory, TrajectoryStep


def trajectory(scores, stop_last=False, tid="t", task="recolor", instructions=None):
    """Edits 1..n with semantic scores `scores`; edit k made by P_k ("p1" = T_s), critique k answers P_{k+1}."""
    n = len(scores)
    instructions = instructions or ["p1"] + [f"p{k}" for k in range(2, n + 1)]
    steps = []
    for k, score in enumerate(scores, start=1):
        last = k == n
        answer = instructions[k - 1] if (last and stop_last) else f"p{k + 1}"
        steps.append(TrajectoryStep(k, instructions[k - 1], f"turn_{k}.png", {"semantic": score, "quality": 8.0 + k / 10},
                                    Critique(f"critique of edit {k}", answer, stop=last and stop_last), seed=100 + k))
    return Trajectory(tid, "source.png", "p1", task, steps, editor="e")


@pytest.mark.parametrize(
    "scores, single_stopped, kept",
    [
        ([4.0, 2.0, 7.0], False, True),   # a later edit beats the first
        ([3.0, 3.0], False, True),        # a tie counts (>=)
        ([6.0, 5.0, 1.0], False, False),  # every rewrite made it worse
        ([3.0, 2.9], False, False),
        ([9.0], False, False),            # one edit, no stop: no k > 1 to compare
        ([9.0], True, True),              # one edit the expert stopped on
        ([], True, False),
    ],
)
def test_trajectory_filter(scores, single_stopped, kept):
    assert keeps(scores, single_stopped=single_stopped) is kept


def test_truncate_keeps_edits_up_to_the_earliest_best():
    assert best_step([4.0, 2.0, 7.0, 5.0]) == 3
    assert best_step([5.0, 8.0, 8.0, 6.0]) == 2  # ties go to the earliest, like the loop's select="best"
    cut = truncate(trajectory([4.0, 2.0, 7.0, 5.0]))
    assert [s.turn for s in cut.steps] == [1, 2, 3] and cut.scores() == [4.0, 2.0, 7.0]
    assert [s.turn for s in truncate(trajectory([9.0, 9.0])).steps] == [1]
    with pytest.raises(InputError, match="empty trajectory"):
        best_step([])


def test_unroll_pairs_each_edit_with_its_own_score_and_the_next_instruction():
    # S = [4, 2, 7, 5]: best k* = 3, the expert did not stop there (edit 4 was worse).
    cut = truncate(trajectory([4.0, 2.0, 7.0, 5.0]))
    samples = unroll(cut, terminal="stop")
    assert [(s.step, s.image, s.previous_instruction, s.semantic, s.answer, s.terminal) for s in samples] == [
        (1, "turn_1.png", "p1", 4.0, "p2", False),
        (2, "turn_2.png", "p2", 2.0, "p3", False),
    ]
    # the score in a sample is of the image it shows, never of the image its answer produced
    assert [s.next_scores["semantic"] for s in samples] == [2.0, 7.0]
    assert samples[0].quality == 8.1 and samples[1].seed == 102 and samples[0].reasoning == "critique of edit 1"
    assert samples[0].instruction == "p1" and samples[0].source == "source.png"
    assert samples[1].target_text() == "<think>critique of edit 2</think><score>[2, 8.2]</score><answer>p3</answer>"


def test_terminal_sample_modes():
    stopped = truncate(trajectory([3.0, 10.0], stop_last=True))  # expert stopped on its best edit
    ran_on = truncate(trajectory([4.0, 2.0, 7.0, 5.0]))           # best edit 3, not stopped
    # "stop": the stop critique of the best image becomes a sample: its score, the same instruction
    [first, last] = unroll(stopped, "stop")
    assert (last.step, last.image, last.semantic, last.answer, last.previous_instruction, last.terminal, last.stop) == (
        2, "turn_2.png", 10.0, "p2", "p2", True, True)
    assert last.next_scores is None and first.answer == "p2" and not first.terminal
    assert [s.step for s in unroll(ran_on, "stop")] == [1, 2]
    # "none": the paper's literal truncation; "always": the expert's critique of k* as written
    assert [s.step for s in unroll(stopped, "none")] == [1]
    always = unroll(ran_on, "always")
    assert [s.step for s in always] == [1, 2, 3] and (always[-1].answer, always[-1].semantic, always[-1].terminal) == ("p4", 7.0, True)
    # a one-edit trajectory the expert stopped on: one terminal sample
    single = unroll(truncate(trajectory([10.0], stop_last=True)), "stop")
    assert [(s.step, s.answer, s.terminal) for s in single] == [(1, "p1", True)]
    with pytest.raises(InputError, match="terminal"):
        unroll(stopped, "sometimes")


def test_an_edit_without_a_usable_critique_gives_no_sample():
    raw = trajectory([2.0, 5.0, 9.0], stop_last=True)
    broken = raw.with_steps([raw.steps[0], replace(raw.steps[1], critique=None), raw.steps[2]])
    assert [s.step for s in unroll(broken, "stop")] == [1, 3]


def test_split_by_variance_with_the_threshold():
    # population variances: [4, 2, 7] -> 38/9 = 4.22; [3, 10] -> 12.25; [10] -> 0; [5, 6] -> 0.25
    assert score_variance([4.0, 2.0, 7.0]) == pytest.approx(38 / 9)
    assert score_variance([3.0, 10.0]) == 12.25 and score_variance([10.0]) == 0.0 and score_variance([5.0, 6.0]) == 0.25
    pool = [trajectory(s, tid=str(i)) for i, s in enumerate([[4.0, 2.0, 7.0], [3.0, 10.0], [10.0], [5.0, 6.0]])]
    sft, rl = split_by_variance(pool, threshold=4.0)
    assert [t.id for t in sft] == ["2", "3"] and [t.id for t in rl] == ["0", "1"]
    sft, rl = split_by_variance(pool, threshold=5.0)
    assert [t.id for t in sft] == ["0", "2", "3"] and [t.id for t in rl] == ["1"]
    assert split_by_variance(pool, threshold=13.0)[1] == []


def test_balance_caps_task_by_score_bin_cells():
    base = Sample("t", 1, "add", "s", "e", "i", "i", "r", 1.0, 9.0, "a")
    pool = ([replace(base, step=i) for i in range(5)]                          # add, bin 0: 5
            + [replace(base, step=10, semantic=9.0)]                            # add, bin 3: 1
            + [replace(base, task="move", step=20 + i) for i in range(3)])      # move, bin 0: 3
    kept = balance(pool, cap="median", seed=0)  # median of (5, 1, 3) = 3
    cells = {}
    for s in kept:
        cells[(s.task, s.semantic >= 7.5)] = cells.get((s.task, s.semantic >= 7.5), 0) + 1
    assert cells == {("add", False): 3, ("add", True): 1, ("move", False): 3}
    assert kept == sorted(kept, key=pool.index)  # original order kept
    assert balance(pool, cap="median", seed=0) == kept  # seeded
    assert len(balance(pool, cap="none")) == 9 and len(balance(pool, cap=1)) == 3
    with pytest.raises(InputError, match="keeps nothing"):
        balance(pool, cap=0)
