"""Per-turn summaries of scored trajectories: IF, CC against the original, O and success at turns 1..K.

Example:
    >>> import torch
    >>> from refine.multiturn.evaluate import turn_summary
    >>> rewards = {"if": torch.tensor([[1.0, 0.0], [1.0, 1.0]]), "cc": torch.tensor([[1.0, 0.25], [1.0, 1.0]])}
    >>> summary = turn_summary(rewards, success=torch.tensor([[1.0, 0.0], [1.0, 1.0]]), prefix="eval_")
    >>> summary["eval_if_t2"], summary["eval_cc_t2"], summary["eval_o_t2"], summary["eval_success_t2"]
    (0.5, 0.625, 0.5, 0.5)

``O_k = sqrt(IF_k * CC_k)`` per trajectory, then averaged (the paper's overall at turn k, with CC
against the original image); `evaluate` rolls out one trajectory per held-out sequence with the
weights in place (the caller swaps the EMA in) and scores it with the unscaled rewards.
"""

from __future__ import annotations

from typing import Sequence

import torch

from refine.multiturn.rewards import TurnRewards, TurnScores
from refine.rollout.multiturn import SequenceRequest, rollout_turns


def turn_summary(rewards: dict[str, torch.Tensor], success: torch.Tensor, prefix: str = "") -> dict[str, float]:
    """Means per turn k (1-based) of every reward, of O_k = sqrt(IF_k CC_k) and of success; NaN-aware."""
    out: dict[str, float] = {}
    turns = success.shape[1]

    def mean(values: torch.Tensor) -> float:
        valid = values[~torch.isnan(values)]
        return float(valid.mean()) if valid.numel() else float("nan")

    overall = torch.sqrt((rewards["if"] * rewards["cc"]).clamp_min(0))
    for k in range(turns):
        for name, values in rewards.items():
            out[f"{prefix}{name}_t{k + 1}"] = mean(values[:, k])
        out[f"{prefix}o_t{k + 1}"] = mean(overall[:, k])
        out[f"{prefix}success_t{k + 1}"] = mean(success[:, k])
    return out


def evaluate(
    backbone,
    sequences: Sequence[SequenceRequest],
    rewards: TurnRewards,
    *,
    turns: int,
    sampler: str,
    steps: int,
    guidance: float | None,
    seed: int,
    max_batch: int,
) -> tuple[dict[str, float], TurnScores]:
    """One trajectory per sequence, scored per turn; returns `turn_summary(prefix="eval_")` and the scores."""
    batch = rollout_turns(
        backbone, sequences, group_size=1, sampler=sampler, steps=steps, guidance=guidance, seed=seed, max_batch=max_batch, turns=turns
    )
    scored = score_batch(rewards, batch)
    summary = turn_summary(scored.rewards, scored.success, prefix="eval_")
    summary["eval_o_last"] = summary[f"eval_o_t{turns}"]  # the paper's headline: O at the last turn
    return summary, scored


def score_batch(rewards: TurnRewards, batch) -> TurnScores:
    """Score a `MultiTurnBatch` with per-turn rewards (the turns it played)."""
    seqs = [batch.sequences[s] for s, _ in batch.items]
    k = batch.turns
    return rewards(
        [q.image for q in seqs],
        batch.images,
        [q.instructions[:k] for q in seqs],
        [q.metas[:k] for q in seqs],
        [q.meta for q in seqs],
    )
