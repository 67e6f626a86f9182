"""Arms trained with several seeds are compared per item on the mean of their seeds (benchmarks/paired_delta.py)."""

import pytest

from refine.compare.stats import group_differences
from refine.errors import InputError

SCORES = {  # entry -> {(case, evaluation seed): O}
    "base": {("c1", 0): 0.2, ("c1", 1): 0.4, ("c2", 0): 0.6},
    "a.s0": {("c1", 0): 0.3, ("c1", 1): 0.4, ("c2", 0): 0.9},
    "a.s1": {("c1", 0): 0.5, ("c1", 1): 0.6},  # c2 missing: the item drops out of any group with a.s1
    "b.s0": {("c1", 0): 0.1, ("c1", 1): 0.1, ("c2", 0): 0.6},
    "b.s1": {("c1", 0): 0.3, ("c1", 1): 0.5, ("c2", 0): 0.6},
}
ROWS = [{"entry": e, "case_id": c, "seed": s, "scores": {"o": v}} for e, items in SCORES.items() for (c, s), v in items.items()]


def test_a_group_is_its_per_item_mean_against_the_reference_and_only_common_items_count():
    diffs = group_differences(ROWS, ["a.s0", "a.s1"], ["base"], "o")
    assert diffs == pytest.approx({("c1", 0): 0.2, ("c1", 1): 0.1})  # (0.3+0.5)/2-0.2, (0.4+0.6)/2-0.4


def test_group_against_group_is_the_difference_of_the_two_means():
    diffs = group_differences(ROWS, ["a.s0", "a.s1"], ["b.s0", "b.s1"], "o")
    assert diffs == pytest.approx({("c1", 0): 0.4 - 0.2, ("c1", 1): 0.5 - 0.3})
    assert group_differences(ROWS, ["a.s0"], ["base"], "o") == pytest.approx({("c1", 0): 0.1, ("c1", 1): 0.0, ("c2", 0): 0.3})


def test_an_unknown_member_is_refused():
    with pytest.raises(InputError):
        group_differences(ROWS, ["a.s0", "a.s9"], ["base"], "o")
