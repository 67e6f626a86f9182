import numpy as np
import pytest
import torch

from refine.errors import InputError
from refine.rollout.group import recompute_log_probs, sample_group
from refine.rollout.samplers import SamplerConfig
from refine.types import EditRequest

SDE = SamplerConfig(name="sde", steps=4, noise_level=0.8)


@pytest.fixture
def requests(random_image):
    # different instruction lengths: chunks that mix requests pad their text
    return [
        EditRequest(random_image(0), "add a red circle"),
        EditRequest(random_image(1), "remove the big blue square on the left"),
    ]


@pytest.mark.parametrize("sampler", ["euler", SDE])
def test_images_do_not_depend_on_chunking(toy, requests, sampler):
    group = 4
    outputs = [sample_group(toy, requests, group, sampler=sampler, steps=4, seed=7, max_batch=b) for b in (1, 3, group)]
    for out in outputs[1:]:
        for r in range(len(requests)):
            assert torch.allclose(out.latents[r], outputs[0].latents[r], atol=1e-5)
            for a, b in zip(out.images[r], outputs[0].images[r]):
                assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1
    # the chunk sizes really were 1, 3 and 4 samples per pass
    toy.calls.clear()
    sample_group(toy, requests, group, steps=2, max_batch=3)
    assert max(toy.calls) == 3


def test_cfg_branches_count_against_the_memory_budget(toy_cfg, requests):
    sample_group(toy_cfg, requests, group_size=4, steps=2, max_batch=4)
    assert max(toy_cfg.calls) == 4  # 2 samples x 2 CFG branches per pass
    assert toy_cfg.calls.count(4) == 2 * 2 * 2  # 2 chunks per request x 2 requests x 2 steps


def test_samples_differ_within_a_group_and_seeds_reproduce(toy, requests):
    a = sample_group(toy, requests, 3, sampler=SDE, seed=1)
    b = sample_group(toy, requests, 3, sampler=SDE, seed=1)
    c = sample_group(toy, requests, 3, sampler=SDE, seed=2)
    assert torch.equal(a.latents[0], b.latents[0])
    assert not torch.allclose(a.latents[0], c.latents[0])
    assert not torch.allclose(a.latents[0][0], a.latents[0][1])
    assert a.seeds == b.seeds and len({s for group in a.seeds for s in group}) == 6


def test_condition_is_encoded_once_per_request(toy, requests, monkeypatch):
    calls = []
    original = toy.encode_condition
    monkeypatch.setattr(toy, "encode_condition", lambda *a, **k: calls.append(1) or original(*a, **k))
    sample_group(toy, requests, group_size=5, steps=2, max_batch=2)
    assert len(calls) == len(requests)


def test_recorded_trajectories_reevaluate_to_the_stored_log_probs(toy, requests):
    out = sample_group(toy, requests, 3, sampler=SDE.model_copy(update={"sde_window": (1, 3)}), seed=0, record=True, max_batch=2)
    traj, cond = out.batch()
    assert traj.latents.shape == (6, 5, 16, 12)
    assert traj.stochastic.tolist() == [False, True, True, False]
    assert torch.allclose(traj.final, torch.cat(out.latents))
    assert (traj.log_probs[:, [0, 3]] == 0).all() and (traj.log_probs[:, [1, 2]] != 0).all()
    recomputed = recompute_log_probs(toy, traj, cond)
    assert recomputed.shape == (6, 2)
    assert torch.allclose(recomputed, traj.log_probs[:, [1, 2]], atol=1e-5)
    # a changed policy changes the log-probs, and gradients reach its parameters
    with torch.no_grad():
        toy.transformer.log_std += 0.3
    changed = recompute_log_probs(toy, traj, cond)
    assert not torch.allclose(changed, traj.log_probs[:, [1, 2]], atol=1e-3)
    changed.sum().backward()
    assert toy.transformer.log_std.grad is not None


def test_recompute_refuses_deterministic_steps(toy, requests):
    out = sample_group(toy, requests[:1], 2, sampler=SDE.model_copy(update={"sde_window": (0, 1)}), record=True)
    traj, cond = out.batch()
    with pytest.raises(ValueError, match="deterministic"):
        recompute_log_probs(toy, traj, cond, steps=[2])


def test_groups_of_a_recorded_rollout(toy, requests):
    out = sample_group(toy, requests, 2, sampler=SDE, record=True)
    traj, _ = out.batch()
    assert traj.request_index.tolist() == [0, 0, 1, 1]
    assert traj.group(1).sample_index.tolist() == [0, 1]
    assert traj.group_ids().tolist() == [0, 0, 1, 1]
    assert out.trajectories[1].info["sampler"]["name"] == "sde"
    with pytest.raises(ValueError, match="record=True"):
        sample_group(toy, requests, 1, steps=1).batch()


def test_flat_images_are_request_major(toy, requests):
    out = sample_group(toy, requests, 2, steps=2)
    assert out.flat_images() == [out.images[0][0], out.images[0][1], out.images[1][0], out.images[1][1]]
    assert out.images[0][0].size == (8, 8) and out.images[0][0].mode == "RGB"


def test_bad_input(toy, requests):
    with pytest.raises(InputError, match="no requests"):
        sample_group(toy, [], 2)
    with pytest.raises(InputError, match="group_size=0"):
        sample_group(toy, requests, 0)
