"""Rank statistics shared by training-time validation, the analyses and the benchmarks.

Example:
    >>> import torch
    >>> from refine.inline_critic.stats import spearman_rows, summarize
    >>> a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
    >>> spearman_rows(a, torch.tensor([[10.0, 20.0, 30.0, 40.0]] * 2)).tolist()
    [1.0, -1.0]
    >>> summarize([0.2, 0.4, 0.6])["median"]
    0.4
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks along the last dimension (ties share their mean rank, as in scipy's rankdata)."""
    from scipy.stats import rankdata

    return torch.from_numpy(rankdata(x.detach().float().cpu().numpy(), axis=-1)).float()


def spearman_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rho between matching rows of a and b, (R, N) each -> (R,). Constant rows give 0."""
    ra, rb = ranks(a), ranks(b)
    ra = ra - ra.mean(dim=-1, keepdim=True)
    rb = rb - rb.mean(dim=-1, keepdim=True)
    denom = ra.norm(dim=-1) * rb.norm(dim=-1)
    return torch.where(denom > 0, (ra * rb).sum(dim=-1) / denom.clamp_min(1e-12), torch.zeros_like(denom))


def rank_normalize(x: torch.Tensor) -> torch.Tensor:
    """Ranks scaled to [0, 1] along the last dimension (the paper's "rank-normalised" maps)."""
    r = ranks(x)
    return (r - 1) / max(x.shape[-1] - 1, 1)


def summarize(values: Sequence[float], *, seed: int = 0, resamples: int = 2000) -> dict[str, float]:
    """Median, mean, fraction > 0, and a 95% bootstrap interval of the mean."""
    data = np.asarray(list(values), dtype=np.float64)
    if data.size == 0:
        return {"n": 0}
    rng = np.random.default_rng(seed)
    means = rng.choice(data, size=(resamples, data.size), replace=True).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "n": int(data.size),
        "median": round(float(np.median(data)), 4),
        "mean": round(float(data.mean()), 4),
        "positive": round(float((data > 0).mean()), 4),
        "ci95": [round(float(low), 4), round(float(high), 4)],
    }
