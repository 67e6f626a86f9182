"""The critic's losses live in the space the backbone predicts in (velocity, or x0 for ShapeEdit's editor)."""

import torch

from refine.inline_critic.losses import flow_target, model_output, model_target


def _pairs(n=4):
    from itertools import islice

    from refine.inline_critic.data import EditPair
    from refine.shapes.data import training_stream

    return [EditPair(c.source_image, c.instruction, c.target_image) for c in islice(training_stream(3), n)]


def _generation_loss(backbone, seed=0):
    """compute_losses' "gen" for the learnable-token stage, and the editor's velocity on the same draws."""
    from refine.training.timesteps import sample_timesteps
    from refine.inline_critic.attach import attach_critic
    from refine.inline_critic.config import InlineCriticConfig
    from refine.inline_critic.train import STAGES, compute_losses, encode_pairs

    config = InlineCriticConfig()
    x0, cond = encode_pairs(backbone, _pairs())
    g = torch.Generator().manual_seed(seed)  # compute_losses draws noise first, then t
    noise = torch.randn(x0.shape, generator=g)
    t = sample_timesteps(x0.shape[0], g, config.timestep_sampling)
    x_t = (1 - t.view(-1, 1, 1)) * x0 + t.view(-1, 1, 1) * noise
    token = torch.nn.Parameter(torch.zeros(backbone.transformer.config.joint_attention_dim))
    with attach_critic(backbone.transformer, token=token, layers=[]) as attachment:
        losses = compute_losses(backbone, attachment, None, x0, cond, STAGES["token"], config, torch.Generator().manual_seed(seed))
        with torch.no_grad():
            v = backbone.velocity(x_t, t, cond)
    return losses["gen"], x0, noise, x_t, t, v


def test_generation_loss_of_an_x0_editor_is_measured_on_x0(tiny_shapes_backbone):
    from refine.backbones.shapes import build_shapes_backbone

    x0_editor = build_shapes_backbone(layers=2, width=32, heads=2, text_layers=1, prediction="x0", seed=0)
    loss, x0, noise, x_t, t, v = _generation_loss(x0_editor)
    x0_hat = model_output(x0_editor, v, x_t, t)
    torch.testing.assert_close(loss, (x0_hat - x0).pow(2).mean(), rtol=1e-5, atol=1e-6)
    velocity_loss = (v - flow_target(x0, noise)).pow(2).mean()
    assert not torch.isclose(loss, velocity_loss, rtol=1e-3)  # not the 1/t^2-weighted velocity loss

    # A velocity editor keeps the paper's velocity loss.
    v_editor = tiny_shapes_backbone()
    loss, x0, noise, x_t, t, v = _generation_loss(v_editor)
    torch.testing.assert_close(loss, (v - model_target(v_editor, x0, noise)).pow(2).mean(), rtol=1e-5, atol=1e-6)
