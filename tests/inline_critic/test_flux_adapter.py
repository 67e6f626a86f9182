"""The critic on FLUX.1 Kontext through `FluxAdapter` (tiny components saved and reloaded via `from_pretrained`).

The tiny transformer has one double-stream and one single-stream block: probe layer 0 is
`transformer_blocks[0]`, layer 1 is `single_transformer_blocks[0]`.
"""

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from refine import compose
from refine.inline_critic.adapters import CriticDims, adapter_for
from refine.inline_critic.adapters.flux import FluxAdapter, FluxCriticAttnProcessor
from refine.inline_critic.attach import attach_critic
from refine.inline_critic.modules import InlineCriticModules
from refine.types import EditRequest

SMALL = dict(auto_resize=False, max_area=32 * 32, max_sequence_length=32)


@pytest.fixture(scope="module")
def backbone():
    from refine.backbones.flux_kontext import FluxKontextBackbone
    from refine.testing.tiny_diffusers import tiny_flux_kontext_dir

    return FluxKontextBackbone.from_pretrained(tiny_flux_kontext_dir(), torch_dtype=torch.float32, **SMALL)


@pytest.fixture(scope="module")
def step(backbone):
    """(x_t, t, cond) of a 2-edit batch at t = 0.7."""
    images = [Image.new("RGB", (32, 32), "white"), Image.new("RGB", (32, 32), "red")]
    cond = backbone.encode_condition(images, ["add a blue square", "make the background green"], guidance=2.5)
    return backbone.prepare_noise(cond, torch.Generator().manual_seed(0)), torch.tensor([0.7, 0.7]), cond


def _forward(backbone, step):
    """(noise velocity (B, N, C), full transformer output (B, N + N_src, C)) through the backbone's own call."""
    seen = {}
    handle = backbone.transformer.register_forward_hook(lambda module, args, output: seen.update(out=output[0]))
    try:
        with torch.no_grad():
            velocity = backbone.velocity(*step)
    finally:
        handle.remove()
    return velocity, seen["out"]


def test_masked_critic_is_invisible_to_every_token_and_unmasked_steers(backbone, step):
    with attach_critic(backbone.transformer, layers=[0, 1], keep_text=True) as plain:
        _, reference = _forward(backbone, step)
        reference_text = dict(plain.capture.text_hidden)
    token = torch.randn(backbone.transformer.config.joint_attention_dim) * 3
    with attach_critic(backbone.transformer, token=token, layers=[0, 1], keep_text=True, hide_critic=True) as critic:
        assert all(isinstance(p, FluxCriticAttnProcessor) for p in backbone.transformer.attn_processors.values())
        _, hidden = _forward(backbone, step)
        for layer in (0, 1):  # every text token after the double- and the single-stream block (critic excluded)
            torch.testing.assert_close(critic.capture.text_hidden[layer], reference_text[layer], atol=1e-5, rtol=1e-5)
        critic.hide_critic = False
        _, visible = _forward(backbone, step)
        critic.enabled = False  # installed but off: the stock computation
        _, off = _forward(backbone, step)
    torch.testing.assert_close(hidden, reference, atol=1e-5, rtol=1e-5)  # noise and source-image tokens alike
    torch.testing.assert_close(off, reference, atol=1e-6, rtol=1e-6)
    assert (visible - reference).abs().max() > 1e-3
    assert not any(isinstance(p, FluxCriticAttnProcessor) for p in backbone.transformer.attn_processors.values())


def test_dims_and_probe_captures_read_off_the_flux_transformer(backbone, step):
    transformer = backbone.transformer
    assert isinstance(adapter_for(transformer), FluxAdapter)
    dims = adapter_for(transformer).dims(transformer)
    assert dims == CriticDims(text_dim=32, hidden_dim=32, time_dim=32, velocity_dim=16, num_layers=2)
    x_t, t, cond = step
    token = torch.randn(dims.text_dim)
    with attach_critic(transformer, token=token, layers=[0, 1], hide_critic=True) as critic:
        with critic.scores() as scores:
            velocity, full = _forward(backbone, step)
        capture = critic.capture
        assert capture.num_noise == x_t.shape[1] == full.shape[1] // 2  # Kontext: source tokens follow, not probed
        for layer in (0, 1):
            assert capture.noise_hidden[layer].shape == (2, x_t.shape[1], dims.hidden_dim)
            assert capture.critic_hidden[layer].shape == (2, dims.hidden_dim)
            assert scores[layer].shape == (2, full.shape[1])  # every image-stream key, noise and source
        assert critic.temb.shape == (2, dims.time_dim)
        # The last block's noise-token capture + temb through FLUX's own read-out is the velocity:
        # right tokens (noise, not source or text), right time embedding.
        with torch.no_grad():
            readout = transformer.proj_out(transformer.norm_out(capture.noise_hidden[1], critic.temb))
        torch.testing.assert_close(readout, velocity, atol=1e-5, rtol=1e-5)
        modules = InlineCriticModules(dims, [0, 1], proj_dim=8)
        with torch.no_grad():
            assert modules.probes["0"](capture.noise_hidden[0], critic.temb).shape == x_t.shape
            assert modules.projections["1"](capture.critic_hidden[1], capture.noise_hidden[1]).shape == x_t.shape[:2]


def test_inline_critic_refiner_edits_through_the_flux_kontext_editor(backbone, tmp_path):
    from refine.inline_critic.refiner import InlineCritic
    from refine.inline_critic.weights import save_critic_weights
    from refine.rollout.flow_editor import FlowEditor

    dims = adapter_for(backbone.transformer).dims(backbone.transformer)
    weights = save_critic_weights(
        tmp_path / "critic.safetensors",
        torch.randn(dims.text_dim) * 5,  # a strong token, so its effect is visible in 8-bit pixels
        {"backbone": "flux_kontext", "text_dim": dims.text_dim, "hidden_dim": dims.hidden_dim, "num_layers": dims.num_layers},
    )
    image = Image.new("RGB", (32, 32), "white")
    requests = [EditRequest(image, "add a red circle", seed=0)]
    editor = FlowEditor(backbone, steps=2, guidance=2.5)
    refined = compose(editor, InlineCritic(str(weights)))
    try:
        assert refined.backbone.name == "flux_kontext+inline_critic"
        before, steered, after = (e.edit(requests)[0].image for e in (editor, refined, editor))
    finally:
        refined.backbone.detach()  # the module's backbone is shared with the other tests
    pixels = [torch.tensor(list(im.getdata()), dtype=torch.int16) for im in (before, steered, after)]
    assert steered.size == (32, 32) and (pixels[1] != pixels[0]).any()
    assert torch.equal(pixels[2], pixels[0])  # the plain editor is untouched


def test_stage1_and_stage2_train_their_own_parameters_only(backbone, tmp_path):
    from refine.inline_critic.config import InlineCriticConfig
    from refine.inline_critic.train import train_inline_critic

    def config(folder, stage1_steps):
        return InlineCriticConfig(
            output_dir=str(tmp_path / folder), probe_layers=[0, 1], proj_dim=8, batch_size=2, progress=False,
            stage1={"steps": stage1_steps, "lr": 1e-2, "warmup_steps": 0}, stage2={"steps": 2, "lr": 1e-2, "warmup_steps": 0},
            data={"validation_cases": 2},
        )

    frozen = {k: v.clone() for k, v in backbone.transformer.state_dict().items()}
    train_inline_critic(config("init", 0), stage="1", backbone=backbone)  # what stage 1 starts from
    run = config("run", 2)
    stage1_metrics = train_inline_critic(run, stage="1", backbone=backbone)["stages"]["1"]
    summary = train_inline_critic(run, stage="2", backbone=backbone)
    init, stage1, stage2 = (load_file(str(tmp_path / f / n)) for f, n in
                            (("init", "stage1.safetensors"), ("run", "stage1.safetensors"), ("run", "stage2.safetensors")))

    def changed(a, b, group):
        return any(not torch.equal(a[k], b[k]) for k in a if k.startswith(group))

    assert changed(init, stage1, "probes") and not changed(init, stage1, "projections") and not changed(init, stage1, "critic_token")
    assert changed(stage1, stage2, "projections") and changed(stage1, stage2, "critic_token") and not changed(stage1, stage2, "probes")
    after = backbone.transformer.state_dict()
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)  # the FLUX backbone never moves
    assert not any(isinstance(p, FluxCriticAttnProcessor) for p in backbone.transformer.attn_processors.values())
    # Stage 1 learns on FLUX too: held-out probe loss 1.303 -> 1.255 after 2 steps when measured.
    assert stage1_metrics["val_probe_loss"] < 0.98 * stage1_metrics["start_val_probe_loss"], stage1_metrics
    stage2_metrics = summary["stages"]["2"]
    assert "val_critic_spearman" in stage2_metrics  # validation read the critic through the masked FLUX forward
    assert stage2_metrics["val_flow_loss"] == pytest.approx(summary["backbone"]["val_flow_loss"], rel=1e-5)  # masked


def test_training_encodes_flux_at_its_default_embedded_guidance(backbone):
    # FLUX.1 [dev] is guidance-distilled: its critic trains at the guidance it is sampled with (2.5),
    # while CFG models encode at 1.0 (no negative branch).
    from refine.backbones.shapes import build_shapes_backbone
    from refine.inline_critic.data import EditPair
    from refine.inline_critic.train import encode_pairs

    pair = EditPair(Image.new("RGB", (32, 32), "white"), "add a blue square", Image.new("RGB", (32, 32), "blue"))
    _, cond = encode_pairs(backbone, [pair])
    assert cond.extras["guidance"].tolist() == [backbone.default_guidance] == [2.5]
    _, shapes_cond = encode_pairs(build_shapes_backbone(layers=1, width=32, heads=2, seed=0), [pair])
    assert shapes_cond.negative is None

