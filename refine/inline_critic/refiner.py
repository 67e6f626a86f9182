"""`InlineCritic`: the refiner that runs a white-box editor with a trained critic token (inference, Sec. 3.2.3).

Example:
    >>> from refine.inline_critic.refiner import InlineCritic
    >>> refiner = InlineCritic()                          # the bundled ShapeEdit critic
    >>> refiner.name, refiner.needs_white_box, refiner.returns_white_box
    ('inline_critic', True, True)
    >>> from refine import compose                                               # doctest: +SKIP
    >>> from refine.backbones.shapes import load_shapes_backbone                 # doctest: +SKIP
    >>> from refine.rollout.flow_editor import FlowEditor                        # doctest: +SKIP
    >>> editor = compose(FlowEditor(load_shapes_backbone()), InlineCritic())     # doctest: +SKIP
    >>> editor.backbone.name                                                     # doctest: +SKIP
    'shapes+inline_critic'

At inference the probes and projections are gone: only the critic token remains, appended to the
text stream and visible to every token (unmasked), so a step costs one extra text token.

Why the result is still white-box (`returns_white_box = True`, read by `compose`): the refined
editor is a shallow copy of the input editor whose `backbone` is a `CriticBackbone`, a complete
`FlowBackbone` that delegates everything to the original backbone and only turns the critic on
around its own `velocity` / `predict_velocity` calls. Its `.transformer` is the real transformer,
so a later white-box refiner (LoRA loading, RL) acts on the same weights and sees the critic
during its forwards. The input editor keeps working unchanged: on the shared transformer the critic
is switched off outside `CriticBackbone` calls (its processors then compute exactly the stock
attention). Limits: one critic per transformer (a second `InlineCritic` on a critic editor is
refused), and the on/off switch is per transformer, so do not run the plain and the critic editor
on the same transformer from two threads at once. `CriticBackbone.detach()` takes the critic off
the transformer (needed before training another critic on it); it comes back on the next call.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from refine.editor import Editor, is_white_box
from refine.errors import ArtifactError, ConfigError
from refine.inline_critic.attach import _ATTACHED, CriticAttachment
from refine.inline_critic.weights import load_critic_weights

BUNDLED_SHAPES_CRITIC = Path(__file__).resolve().parent / "assets" / "shapes-critic.safetensors"
"""Critic weights trained on the bundled ShapeEdit editor (see refine/inline_critic/README.md)."""


def _inference_attachment(transformer: torch.nn.Module, token: torch.Tensor) -> CriticAttachment:
    """The transformer's shared inference attachment (created, switched off, on first use)."""
    existing = _ATTACHED.get(transformer)
    if existing is not None:
        if not getattr(existing, "shared_for_inference", False):
            raise ConfigError("this transformer has a training-time critic attachment; detach it before building a critic editor")
        return existing
    attachment = CriticAttachment(transformer, token=token, layers=(), hide_critic=False, keep_text=False, adapter=None).attach()
    attachment.shared_for_inference = True
    attachment.enabled = False  # the plain editor sharing this transformer must not see a critic
    return attachment


class CriticBackbone:
    """A `FlowBackbone` that is `backbone` plus an unmasked critic token in every forward.

    Example:
        >>> import torch
        >>> from refine.backbones.shapes import build_shapes_backbone
        >>> from refine.inline_critic.refiner import CriticBackbone
        >>> plain = build_shapes_backbone(layers=1, width=32, heads=2, vocabulary=["red"])
        >>> critic = CriticBackbone(plain, torch.randn(32))
        >>> critic.name, critic.transformer is plain.transformer, critic.latent_shape == plain.latent_shape
        ('shapes+inline_critic', True, True)

    Every attribute other than `velocity` / `predict_velocity` / `name` is the wrapped backbone's.
    """

    def __init__(self, backbone: Any, token: torch.Tensor) -> None:
        if isinstance(backbone, CriticBackbone):
            raise ConfigError("this editor already runs an inline critic; apply InlineCritic once")
        transformer = backbone.transformer
        device = next(transformer.parameters()).device
        self.__dict__["backbone"] = backbone
        self.token = token.detach().to(device=device, dtype=torch.float32)
        self.name = f"{backbone.name}+inline_critic"
        self.attachment = _inference_attachment(transformer, self.token)

    def __getattr__(self, name: str) -> Any:  # only called for attributes not found on self
        return getattr(self.__dict__["backbone"], name)

    def detach(self) -> None:
        """Remove the critic's hooks and processors from the shared transformer (e.g. before training
        another critic on it); critic backbones on that transformer re-attach on their next call."""
        self.attachment.detach()

    @contextmanager
    def critic_on(self) -> Iterator[None]:
        """Run forwards inside this block with this backbone's token appended and visible."""
        if _ATTACHED.get(self.backbone.transformer) is not self.attachment:
            self.attachment = _inference_attachment(self.backbone.transformer, self.token)
        attachment = self.attachment
        previous = (attachment.token, attachment.state.enabled, attachment.state.hide_critic)
        attachment.token, attachment.state.enabled, attachment.state.hide_critic = self.token, True, False
        try:
            yield
        finally:
            attachment.token, attachment.state.enabled, attachment.state.hide_critic = previous

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        with self.critic_on():
            return self.backbone.velocity(x_t, t, cond)

    def predict_velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond, guidance: float | None = None) -> torch.Tensor:
        with self.critic_on():
            return self.backbone.predict_velocity(x_t, t, cond, guidance)


def check_compatible(metadata: dict[str, str], backbone: Any, path: Path, check_backbone_name: bool) -> None:
    """`ArtifactError` when weights were trained for another transformer shape (or backbone name)."""
    from refine.inline_critic.adapters import adapter_for

    dims = adapter_for(backbone.transformer).dims(backbone.transformer)
    for key, have in (("text_dim", dims.text_dim), ("hidden_dim", dims.hidden_dim), ("num_layers", dims.num_layers)):
        if key in metadata and int(metadata[key]) != have:
            raise ArtifactError(
                f"{path}: critic trained for {key}={metadata[key]}, but backbone {backbone.name!r} has {key}={have}; "
                "use weights trained on this backbone"
            )
    if check_backbone_name and metadata.get("backbone") not in (None, backbone.name):
        raise ArtifactError(
            f"{path}: critic trained on backbone {metadata['backbone']!r}, not {backbone.name!r}; "
            "pass check_backbone_name=False if the weights are known to fit"
        )


class InlineCritic:
    """Refiner: `editor` -> the same white-box editor with the critic token in its forward pass.

    Args:
        weights: inference weights written by `refine train inline-critic` (`critic.safetensors`);
            None loads the bundled ShapeEdit critic.
        check_backbone_name: refuse weights trained on a backbone of another name (sizes are
            always checked).
    """

    name = "inline_critic"
    needs_white_box = True
    returns_white_box = True

    def __init__(self, weights: str | None = None, check_backbone_name: bool = True) -> None:
        self.weights = Path(weights) if weights is not None else BUNDLED_SHAPES_CRITIC
        self.check_backbone_name = check_backbone_name

    def __call__(self, editor: Editor) -> Editor:
        if not is_white_box(editor):
            raise ConfigError(
                f"refiner 'inline_critic' needs a white-box flow editor (a FlowEditor exposing its backbone), "
                f"got {type(editor).__name__}"
            )
        if isinstance(editor.backbone, CriticBackbone):
            raise ConfigError("this editor already runs an inline critic; apply InlineCritic once")
        token, metadata = load_critic_weights(self.weights)
        check_compatible(metadata, editor.backbone, self.weights, self.check_backbone_name)
        refined = copy.copy(editor)
        refined.backbone = CriticBackbone(editor.backbone, token)
        return refined
