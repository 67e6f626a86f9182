import torch

from refine.inline_critic.attach import attach_critic
from refine.inline_critic.modules import InlineCriticModules
from refine.inline_critic.adapters import adapter_for
from refine.inline_critic.losses import critic_target


def test_gradients_reach_only_what_each_loss_trains(transformer, inputs):
    dims = adapter_for(transformer).dims(transformer)
    modules = InlineCriticModules(dims, probe_layers=[0])
    transformer.requires_grad_(False)
    with attach_critic(transformer, token=modules.critic_token, layers=[0]) as critic:
        transformer(**inputs)
        hidden, critic_hidden = critic.capture.noise_hidden[0], critic.capture.critic_hidden[0]
        probe_out = modules.probes["0"](hidden, critic.temb)
        probe_out.square().mean().backward(retain_graph=True)
        assert modules.critic_token.grad is None  # probes read sg(h): nothing flows back to the token
        assert all(p.grad is not None for p in modules.probes.parameters())
        modules.projections["0"](critic_hidden, hidden).square().mean().backward()
        assert modules.critic_token.grad is not None and modules.critic_token.grad.abs().sum() > 0
        assert all(p.grad is None for p in transformer.parameters())


def test_log_rescaling_keeps_order_and_compresses_range():
    error = torch.tensor([1e-4, 1e-2, 1.0, 100.0])
    for mode in ("log", "log1p"):
        rescaled = critic_target(error, mode)
        assert torch.all(rescaled[1:] > rescaled[:-1])
        assert (rescaled.max() - rescaled.min()) < (error.max() - error.min()) / 5
