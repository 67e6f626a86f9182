"""Inline Critic (inline-critic.txt): a learned token that critiques and steers a frozen MM-DiT inside its forward pass.

Example:
    >>> from refine.inline_critic import InlineCriticConfig
    >>> InlineCriticConfig().method
    'three_stage'

Map (one concept per file):
* `config.py` — `InlineCriticConfig` (the three-stage recipe and the ablation baselines).
* `adapters/` — what is model-specific, one file per MM-DiT family: `qwen_image.py` (Qwen-Image-Edit and
  the ShapeEdit editor), `flux.py` (FLUX.1 / FLUX.1 Kontext: double- and single-stream blocks).
* `processor.py` — the attention processor that hides the critic (eq. 5); token order documented there.
* `attach.py` — installs token, processors and hidden-state taps on a transformer.
* `modules.py` — probe heads (eq. 2), projection pairs (eq. 4), the critic token.
* `losses.py` — eqs. 1, 3, 6, 7.  `data.py` — edit-pair sources.  `weights.py` — safetensors I/O.
* `train.py` — the recipe (`refine train inline-critic`).  `refiner.py` — `InlineCritic` refiner.
* `analysis.py` — the probing study and alignment experiments A/B/C (`refine critic analyze`).

Importing this package is cheap; names below are imported on first use (torch stays unloaded for
`refine --help`).
"""

from __future__ import annotations

from refine._lazy import lazy_exports

_EXPORTS = {
    "InlineCriticConfig": "refine.inline_critic.config",
    "InlineCritic": "refine.inline_critic.refiner",
    "CriticBackbone": "refine.inline_critic.refiner",
    "InlineCriticModules": "refine.inline_critic.modules",
    "attach_critic": "refine.inline_critic.attach",
    "QwenCriticAttnProcessor": "refine.inline_critic.processor",
    "train_inline_critic": "refine.inline_critic.train",
    "save_critic_weights": "refine.inline_critic.weights",
    "load_critic_weights": "refine.inline_critic.weights",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
