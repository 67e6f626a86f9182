from pathlib import Path

import pytest
import torch
from PIL import Image

from refine import compose
from refine.errors import ArtifactError, ConfigError
from refine.inline_critic.refiner import CriticBackbone, InlineCritic
from refine.inline_critic.weights import save_critic_weights
from refine.registry import registry
from refine.rollout.flow_editor import FlowEditor

PRESET = Path(__file__).resolve().parents[2] / "examples" / "configs" / "inline_critic" / "shapes.yaml"


def _requests():
    from refine.shapes.data import load_split

    return [case.to_request(seed=i) for i, case in enumerate(load_split("shapes-bench")[:2])]


def _pixels(results):
    import numpy as np

    return [np.asarray(r.image, dtype=np.int16) for r in results]


@pytest.fixture
def critic_file(tmp_path):
    token = torch.randn(32) * 5  # a strong token, so its effect on the output is visible
    return save_critic_weights(tmp_path / "critic.safetensors", token, {"backbone": "shapes", "text_dim": 32, "hidden_dim": 32, "num_layers": 2})


def test_refined_editor_steers_and_leaves_the_original_alone(tiny_shapes_backbone, critic_file):
    editor = FlowEditor(tiny_shapes_backbone(), steps=2, guidance=1.0)
    before = _pixels(editor.edit(_requests()))
    refined = compose(editor, InlineCritic(str(critic_file)))
    assert refined.backbone.name == "shapes+inline_critic" and refined.backbone.transformer is editor.backbone.transformer
    steered = _pixels(refined.edit(_requests()))
    after = _pixels(editor.edit(_requests()))
    assert any((a != b).any() for a, b in zip(steered, before))  # the critic token acts
    assert all((a == b).all() for a, b in zip(after, before))  # the input editor is untouched
    assert refined.edit(_requests())[0].steps[0].source == "shapes+inline_critic"


def test_critic_backbone_matches_an_explicit_token_forward(tiny_shapes_backbone):
    from refine.inline_critic.attach import attach_critic

    backbone = tiny_shapes_backbone()
    token = torch.randn(32)
    cond = backbone.encode_condition([Image.new("RGB", (32, 32), "white")], ["add a red circle"], guidance=1.0)
    x = torch.randn(1, *backbone.latent_shape)
    critic = CriticBackbone(backbone, token)
    with torch.no_grad():
        through_refiner = critic.velocity(x, torch.tensor([0.5]), cond)
        plain = backbone.velocity(x, torch.tensor([0.5]), cond)
    critic.attachment.detach()
    with attach_critic(backbone.transformer, token=token), torch.no_grad():
        explicit = backbone.velocity(x, torch.tensor([0.5]), cond)
    torch.testing.assert_close(through_refiner, explicit)
    assert (plain - explicit).abs().max() > 1e-4


def test_wrong_weights_and_orders_are_refused(tiny_shapes_backbone, tmp_path):
    editor = FlowEditor(tiny_shapes_backbone(), steps=1)
    other = save_critic_weights(tmp_path / "big.safetensors", torch.randn(64), {"backbone": "shapes", "text_dim": 64, "num_layers": 2})
    with pytest.raises(ArtifactError, match="text_dim=64"):
        InlineCritic(str(other))(editor)
    with pytest.raises(ArtifactError, match="critic weights not found"):
        InlineCritic(str(tmp_path / "missing.safetensors"))(editor)
    renamed = save_critic_weights(tmp_path / "q.safetensors", torch.randn(32), {"backbone": "qwen_image_edit", "text_dim": 32})
    with pytest.raises(ArtifactError, match="check_backbone_name=False"):
        InlineCritic(str(renamed))(editor)
    assert InlineCritic(str(renamed), check_backbone_name=False)(editor).backbone.name == "shapes+inline_critic"

    class BlackBox:
        def edit(self, requests):
            return []

    with pytest.raises(ConfigError, match="white-box"):
        compose(BlackBox(), InlineCritic(str(renamed)))


def test_critic_is_applied_once(tiny_shapes_backbone, critic_file):
    editor = compose(FlowEditor(tiny_shapes_backbone(), steps=1), InlineCritic(str(critic_file)))
    with pytest.raises(ConfigError, match="once"):
        InlineCritic(str(critic_file))(editor)


def test_registry_builds_the_refiner(critic_file):
    refiner = registry.build("refiner", {"kind": "inline_critic", "weights": str(critic_file)})
    assert isinstance(refiner, InlineCritic) and refiner.weights == critic_file


def test_bundled_critic_reproduces_its_recorded_held_out_flow_loss():
    """The bundled critic, loaded through the refiner a user composes, on the bundled editor: the
    held-out flow losses recorded in refine/inline_critic/README.md ("Analyses of the bundled
    critic": backbone 0.02088, critic 0.01955 on the preset's 64 validation pairs, fixed (t, noise))."""
    from refine.backbones.shapes import load_shapes_backbone
    from refine.config import load_config
    from refine.inline_critic.config import InlineCriticConfig
    from refine.inline_critic.data import validation_pairs
    from refine.inline_critic.train import validation_metrics

    config = load_config(InlineCriticConfig, PRESET, [])
    pairs = validation_pairs(config.data)
    backbone = load_shapes_backbone()
    editor = InlineCritic()(FlowEditor(backbone, steps=1))
    try:
        assert editor.backbone.name == "shapes+inline_critic"
        with torch.no_grad():
            plain = validation_metrics(backbone, None, None, pairs, config, seed=config.data.validation_seed)["val_flow_loss"]
            critic = validation_metrics(editor.backbone, None, None, pairs, config, seed=config.data.validation_seed)["val_flow_loss"]
    finally:
        editor.backbone.detach()
    assert (plain, critic) == (pytest.approx(0.02088, abs=1e-5), pytest.approx(0.01955, abs=1e-5))
