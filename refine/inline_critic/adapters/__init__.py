"""Model-family adapters of the inline critic (one file per MM-DiT family).

Example:
    >>> from refine.inline_critic.adapters import ADAPTERS
    >>> sorted(ADAPTERS)
    ['flux', 'qwen_image']
"""

from refine.inline_critic.adapters.base import ADAPTERS, CriticDims, MMDiTAdapter, adapter_for

__all__ = ["ADAPTERS", "CriticDims", "MMDiTAdapter", "adapter_for"]
