import pytest
import torch

from refine.errors import ConfigError
from refine.inline_critic.attach import attach_critic
from refine.inline_critic.processor import QwenCriticAttnProcessor


def _run(transformer, inputs):
    with torch.no_grad():
        return transformer(**inputs).sample


def test_hidden_critic_leaves_every_other_token_unchanged(transformer, inputs):
    with attach_critic(transformer, layers=[0, 1], keep_text=True) as plain:
        reference = _run(transformer, inputs)
        reference_text = dict(plain.capture.text_hidden)
    token = torch.nn.Parameter(torch.randn(16) * 3)
    with attach_critic(transformer, token=token, layers=[0, 1], keep_text=True, hide_critic=True) as critic:
        hidden = _run(transformer, inputs)
        for layer in (0, 1):  # text-stream tokens too, block by block (critic excluded)
            torch.testing.assert_close(critic.capture.text_hidden[layer], reference_text[layer], atol=1e-6, rtol=1e-5)
        critic.hide_critic = False
        visible = _run(transformer, inputs)
    torch.testing.assert_close(hidden, reference, atol=1e-6, rtol=1e-5)
    assert (visible - reference).abs().max() > 1e-3  # unmasked, the critic steers the image tokens


def test_critic_still_reads_everything_when_hidden(transformer, inputs):
    token = torch.nn.Parameter(torch.randn(16))
    with attach_critic(transformer, token=token, layers=[1], hide_critic=True) as critic:
        _run(transformer, inputs)
        first = critic.capture.critic_hidden[1].clone()
        changed = dict(inputs, hidden_states=inputs["hidden_states"] + 1.0)
        _run(transformer, changed)
        assert (critic.capture.critic_hidden[1] - first).abs().max() > 1e-3


def test_detach_restores_stock_processors_and_outputs(transformer, inputs):
    reference = _run(transformer, inputs)
    before = {name: type(p).__name__ for name, p in transformer.attn_processors.items()}
    attachment = attach_critic(transformer, token=torch.nn.Parameter(torch.randn(16)), layers=[0])
    assert all(isinstance(p, QwenCriticAttnProcessor) for p in transformer.attn_processors.values())
    attachment.enabled = False  # installed but off: exactly the stock computation
    torch.testing.assert_close(_run(transformer, inputs), reference, atol=1e-6, rtol=1e-5)
    attachment.detach()
    assert {name: type(p).__name__ for name, p in transformer.attn_processors.items()} == before
    torch.testing.assert_close(_run(transformer, inputs), reference, atol=0, rtol=0)


def test_processor_fails_early_on_unsupported_inputs(transformer, inputs):
    with attach_critic(transformer, token=torch.nn.Parameter(torch.randn(16))):
        attn = transformer.transformer_blocks[0].attn
        image = torch.randn(2, 32, 16)
        with pytest.raises(ValueError, match="encoder_hidden_states"):
            attn.processor(attn, image)
        with pytest.raises(ValueError, match="attention_mask"):
            attn.processor(attn, image, torch.randn(2, 7, 16), attention_mask=torch.ones(2, 39))
        _run(transformer, inputs)  # sets the expected text length (6 + critic)
        with pytest.raises(ValueError, match="pre-hook"):  # a block called without the critic appended
            attn.processor(attn, image, torch.randn(2, 6, 16))


def test_token_of_the_wrong_width_and_double_attachment_are_refused(transformer):
    with pytest.raises(ConfigError, match="joint_attention_dim=16"):
        attach_critic(transformer, token=torch.nn.Parameter(torch.randn(8)))
    with attach_critic(transformer, token=torch.nn.Parameter(torch.randn(16))):
        with pytest.raises(ConfigError, match="already has an inline critic"):
            attach_critic(transformer, token=torch.nn.Parameter(torch.randn(16)))


def test_zero_cond_t_models_give_probes_the_real_time_embedding(inputs):
    from refine.inline_critic.testing import tiny_qwen_transformer

    transformer = tiny_qwen_transformer(zero_cond_t=True)
    with attach_critic(transformer, token=torch.nn.Parameter(torch.randn(16)), layers=[0], hide_critic=True) as critic:
        _run(transformer, inputs)
        assert critic.capture.temb.shape[0] == 4 and critic.temb.shape == (2, 16)
        assert critic.capture.noise_hidden[0].shape == (2, 16, 16)
