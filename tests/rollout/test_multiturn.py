"""Multi-turn rollouts: shapes, chaining of turns, and determinism per (seed, sequence, sample, turn)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from refine.errors import InputError
from refine.images import to_tensor
from refine.rollout.multiturn import SequenceRequest, rollout_turns, turn_seed


def _sequences(random_image, count=2, turns=3):
    words = ["alpha beta", "gamma", "delta epsilon", "zeta"]
    return [SequenceRequest(random_image(s), [words[(s + k) % len(words)] for k in range(turns)]) for s in range(count)]


def _pixels(images):
    return np.stack([np.asarray(im) for im in images])


def test_shapes_and_each_turn_edits_the_previous_output(toy, random_image):
    sequences = _sequences(random_image)
    batch = rollout_turns(toy, sequences, group_size=3, sampler="dpm", steps=3, seed=5)
    assert tuple(batch.x0.shape) == (6, 3, 16, 12)  # (S * G, K, N, C)
    assert batch.group_ids.tolist() == [0, 0, 0, 1, 1, 1]
    assert all(len(row) == 3 for row in batch.images) and all(len(row) == 3 for row in batch.conditions)
    for i, (s, _) in enumerate(batch.items):
        assert np.array_equal(np.asarray(batch.sources[i][0]), np.asarray(sequences[s].image))
        for k in range(1, 3):
            assert batch.sources[i][k] is batch.images[i][k - 1]
            # the condition of turn k encodes that item's own turn-(k-1) output
            expected = toy.encode_images([batch.images[i][k - 1]])
            assert torch.equal(batch.conditions[i][k].image_latents, expected)
    # the G trajectories of a group differ (independent noise), at every turn
    assert not torch.equal(batch.x0[0, 0], batch.x0[1, 0])
    assert not torch.equal(batch.x0[0, 2], batch.x0[1, 2])


def test_deterministic_and_independent_of_slicing_and_chunking(toy, random_image):
    sequences = _sequences(random_image)
    full = rollout_turns(toy, sequences, group_size=2, sampler="sde", steps=3, seed=11, max_batch=8)
    again = rollout_turns(toy, sequences, group_size=2, sampler="sde", steps=3, seed=11, max_batch=8)
    assert torch.equal(full.x0, again.x0)
    # a process that draws only items (1, 0) and (0, 1), one per forward pass, sees the same trajectories
    part = rollout_turns(toy, sequences, items=[(1, 0), (0, 1)], sampler="sde", steps=3, seed=11, max_batch=1)
    torch.testing.assert_close(part.x0[0], full.x0[2], atol=1e-5, rtol=0)
    torch.testing.assert_close(part.x0[1], full.x0[1], atol=1e-5, rtol=0)
    other = rollout_turns(toy, sequences, group_size=2, sampler="sde", steps=3, seed=12)
    assert not torch.equal(full.x0, other.x0)


def test_record_keeps_per_turn_trajectories_with_log_probs(toy, random_image):
    batch = rollout_turns(toy, _sequences(random_image), group_size=2, sampler="sde", steps=3, seed=0, record=True, turns=2)
    assert batch.turns == 2 and len(batch.trajectories) == 2
    trajectory = batch.trajectories[1]
    assert tuple(trajectory.latents.shape) == (4, 4, 16, 12)
    assert trajectory.request_index.tolist() == [0, 0, 1, 1] and trajectory.sample_index.tolist() == [0, 1, 0, 1]
    assert bool((trajectory.log_probs[:, trajectory.stochastic_indices] != 0).all())
    torch.testing.assert_close(trajectory.latents[:, -1], batch.x0[:, 1])


def test_turn_seed_depends_on_every_part():
    base = turn_seed(3, 1, 2, 0)
    assert len({base, turn_seed(4, 1, 2, 0), turn_seed(3, 2, 2, 0), turn_seed(3, 1, 3, 0), turn_seed(3, 1, 2, 1)}) == 5


def test_bad_input_is_refused(toy, random_image):
    with pytest.raises(InputError, match="one non-empty instruction"):
        SequenceRequest(random_image(0), [])
    mixed = [SequenceRequest(random_image(0), ["a", "b"]), SequenceRequest(random_image(1), ["a"])]
    with pytest.raises(InputError, match="turns=K"):
        rollout_turns(toy, mixed, group_size=2)
    assert rollout_turns(toy, mixed, group_size=1, turns=1, steps=1).turns == 1
