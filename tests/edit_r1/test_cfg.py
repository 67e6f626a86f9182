"""CFG and the NFT loss: CFG-free (rollouts and loss on the conditional velocity) or CFG-consistent
(both on the guided velocity, both branches through the LoRA). Either way the loss models the
policy that sampled; the tests compute that loss by hand."""

import pytest
import torch
from accelerate import Accelerator
from PIL import Image

from refine.edit_r1.collect import rollout
from refine.training.policies import setup_policies
from refine.edit_r1.train import train
from refine.edit_r1.update import TrainingBatch, noised, nft_update, policy_velocity
from refine.training.timesteps import draw_times
from refine.rollout.cfg import ConditionalOnly
from refine.rollout.objectives import per_sample_mse
from refine.testing.edit_r1 import brightness_reward, tiny_backbone, tiny_config
from refine.types import EditRequest

REQUESTS = [EditRequest(Image.new("RGB", (32, 32), c), "make it red") for c in ("white", "black")]
ITEMS = [(0, 0), (0, 1), (1, 0), (1, 1)]


def _lora_backbone():
    backbone = tiny_backbone()
    state = setup_policies(backbone, finetune="lora", lora_rank=4, lora_alpha=None, lora_targets=["to_q", "to_v", "to_k"],
                           lora_dropout=0.0, kl=False, seed=0)
    with torch.no_grad():
        for p in state.params:
            p.add_(0.05 * torch.randn_like(p))
    state.old.copy_from(state.params)  # the old policy is the trained one, as at an iteration's start
    return backbone, state


def test_cfg_free_rollouts_sample_the_conditional_velocity():
    backbone = tiny_backbone()  # CFG 2 by default
    free = rollout(ConditionalOnly(backbone), REQUESTS, ITEMS, sampler="euler", steps=3, seed=0)
    unguided = rollout(backbone, REQUESTS, ITEMS, sampler="euler", steps=3, guidance=1.0, seed=0)
    guided = rollout(backbone, REQUESTS, ITEMS, sampler="euler", steps=3, seed=0)
    assert torch.equal(free.x0, unguided.x0)
    assert not torch.allclose(free.x0, guided.x0, atol=1e-4)
    assert all(c.negative is None for c in free.conditions.values())


def test_the_guided_velocity_is_cfg_by_hand_with_both_branches_through_the_lora():
    backbone, state = _lora_backbone()
    batch = rollout(backbone, REQUESTS, ITEMS, sampler="euler", steps=2, seed=0)
    cond = batch.training_conditions(negative=True)
    assert cond.negative is not None
    x, t = torch.randn(4, *batch.x0.shape[1:], generator=torch.Generator().manual_seed(1)), torch.full((4,), 0.6)
    v_c = backbone.velocity(x, t, batch.training_conditions())
    v_u = backbone.velocity(x, t, cond.negative)
    assert torch.allclose(policy_velocity(backbone, x, t, cond, 2.0), v_u + 2.0 * (v_c - v_u), atol=1e-6)
    assert torch.equal(policy_velocity(backbone, x, t, cond, None), v_c)

    # The gradient of a loss on the guided velocity reaches the LoRA through both branches:
    # d/dθ of ||v_g||² equals the hand-assembled one, and differs from the conditional branch's.
    def grads(velocity_fn):
        for p in state.params:
            p.grad = None
        (velocity_fn() ** 2).mean().backward()
        return torch.cat([p.grad.flatten() for p in state.params])

    guided = grads(lambda: policy_velocity(backbone, x, t, cond, 2.0))
    by_hand = grads(lambda: (lambda c, u: u + 2.0 * (c - u))(backbone.velocity(x, t, batch.training_conditions()),
                                                              backbone.velocity(x, t, cond.negative)))
    conditional = grads(lambda: 2.0 * backbone.velocity(x, t, batch.training_conditions()))
    assert torch.allclose(guided, by_hand, atol=1e-6)
    assert not torch.allclose(guided, conditional, atol=1e-4)


@pytest.mark.parametrize("guidance", [None, 2.0])
def test_the_nft_update_loss_is_the_loss_of_the_sampling_policy_by_hand(guidance):
    # At the start the old policy is the trained one, so v+ = v- = v_θ and the loss of every sample
    # is ||v - (noise - x0)||² with v the velocity of the policy that sampled: conditional (free)
    # or guided (consistent).
    backbone, state = _lora_backbone()
    sampler = ConditionalOnly(backbone) if guidance is None else backbone
    batch = rollout(sampler, REQUESTS, ITEMS, sampler="dpm", steps=3, seed=0, guidance=guidance)
    cond = batch.training_conditions(negative=guidance is not None)
    training = TrainingBatch(x0=batch.x0, cond=cond, r=torch.tensor([1.0, 0.0, 0.75, 0.25]),
                             keep=torch.ones(4, dtype=torch.bool), times=batch.schedule[:-1])
    optimizer = torch.optim.SGD(state.params, lr=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    stats = nft_update(backbone, state.transformer, state.params, state.old, None, training, accelerator=Accelerator(cpu=True),
                       optimizer=optimizer, scheduler=scheduler, generator=torch.Generator().manual_seed(5),
                       micro_batch=4, accumulation=1, times_per_sample=1, guidance=guidance)

    g = torch.Generator().manual_seed(5)  # replay the update's draws: order, time, noise
    order = torch.randperm(4, generator=g)
    t = draw_times(training.times, 4, 1, g)[0]
    noise = torch.randn(batch.x0.shape, generator=g)
    x0, c = batch.x0[order], cond.select(order)
    x_t, target = noised(x0, noise, t)
    with torch.no_grad():
        if guidance is None:
            v = backbone.velocity(x_t, t, c)
        else:
            v_c, v_u = backbone.velocity(x_t, t, batch.training_conditions().select(order)), backbone.velocity(x_t, t, c.negative)
            v = v_u + guidance * (v_c - v_u)
    expected = per_sample_mse(v, target).mean()
    assert stats.loss / stats.points == pytest.approx(float(expected), rel=1e-5)


def test_the_trainer_runs_both_cfg_variants(tmp_path):
    free = train(tiny_config(tmp_path / "free", iterations=1, eval__benchmark=None), backbone=tiny_backbone(), reward=brightness_reward)
    consistent = train(tiny_config(tmp_path / "consistent", iterations=1, nft__cfg="consistent", rollout__guidance=3.0,
                                   eval__benchmark=None), backbone=tiny_backbone(), reward=brightness_reward)
    # Different sampling policies draw different edits, hence different rewards.
    assert free.metrics[0]["reward_mean"] != consistent.metrics[0]["reward_mean"]
