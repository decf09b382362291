"""Value-function and process-reward-model (PRM) losses and step scoring."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from cdra.algos.masking import masked_mean

__all__ = ["clipped_value_loss", "clipped_value_losses", "outcome_token_rewards", "prm_step_loss", "prm_token_losses", "prm_step_scores", "aggregate_step_scores", "AGGREGATIONS"]

Aggregation = Literal["prod", "min", "sum", "last"]
AGGREGATIONS: tuple[str, ...] = ("prod", "min", "sum", "last")


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float | None = 0.2,
) -> torch.Tensor:
    """PPO value loss, a scalar: masked mean of 0.5 * max((v - R)^2, (v_clip - R)^2).

    v_clip = old_values + clamp(values - old_values, -clip_range, clip_range).
    ``clip_range=None`` gives the plain 0.5 * (v - R)^2.
    """
    return masked_mean(clipped_value_losses(values, old_values, returns, clip_range), mask)


def clipped_value_losses(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    clip_range: float | None = 0.2,
) -> torch.Tensor:
    """Per-token PPO value loss 0.5 * max((v - R)^2, (v_clip - R)^2), same shape as ``values``."""
    unclipped = (values - returns).pow(2)
    if clip_range is None:
        return 0.5 * unclipped
    v_clip = old_values + (values - old_values).clamp(-clip_range, clip_range)
    return 0.5 * torch.maximum(unclipped, (v_clip - returns).pow(2))


def outcome_token_rewards(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Dense rewards (batch, seq) holding each row's scalar reward (batch,) or (batch, 1) at its
    last masked position and 0 elsewhere (a row with an empty mask gets nothing)."""
    m = mask.bool()
    positions = torch.arange(m.shape[-1], device=m.device).expand_as(m)
    last = torch.where(m, positions, -1).amax(-1)
    out = torch.zeros(m.shape, dtype=torch.float32, device=m.device)
    rows = torch.nonzero(last >= 0).squeeze(-1)
    out[rows, last[rows]] = rewards.reshape(-1)[rows].float()
    return out


def prm_step_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Cross entropy of step-class logits (num_steps, K+1) against value labels (num_steps,) in 0..K.

    Labels equal to ``ignore_index`` are skipped. Mean over the remaining steps.
    """
    return F.cross_entropy(logits.float(), labels.long(), ignore_index=ignore_index)


def prm_token_losses(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Per-token cross entropy of class logits (..., K+1) against labels (...): 0 where the label
    is ``ignore_index``. A label outside 0..K raises ValueError naming it."""
    valid = labels != ignore_index
    out_of_range = valid & ((labels < 0) | (labels >= logits.shape[-1]))
    if out_of_range.any():
        raise ValueError(f"PRM step label {int(labels[out_of_range][0])} is outside 0..{logits.shape[-1] - 1} "
                         f"(the head has {logits.shape[-1]} classes)")
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1).long().clamp(min=0), reduction="none")
    return torch.where(valid.reshape(-1), losses, 0.0).reshape(labels.shape)


def prm_step_scores(logits: torch.Tensor, threshold_class: int = 2) -> torch.Tensor:
    """Step score P(class >= threshold_class) from logits (..., K+1) -> (...)."""
    probs = torch.softmax(logits.float(), dim=-1)
    return probs[..., threshold_class:].sum(-1)


def aggregate_step_scores(
    scores: torch.Tensor,
    how: Aggregation,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Solution score from step scores (..., num_steps) -> (...): product, min, sum or last.

    ``mask`` (same shape, optional) marks the real steps of padded rows; ``last`` takes the last
    real step. A row with no step scores 0 whatever ``how`` is.
    """
    if mask is None:
        m = torch.ones_like(scores, dtype=torch.bool)
    else:
        m = torch.broadcast_to(mask.bool(), scores.shape)
    has_any = m.any(-1)
    zero = torch.zeros((), dtype=scores.dtype, device=scores.device)
    if how == "prod":
        out = torch.where(m, scores, torch.ones((), dtype=scores.dtype, device=scores.device)).prod(-1)
    elif how == "min":
        out = torch.where(m, scores, torch.full((), float("inf"), dtype=scores.dtype, device=scores.device)).amin(-1)
    elif how == "sum":
        out = torch.where(m, scores, zero).sum(-1)
    elif how == "last":
        if scores.shape[-1] == 0:
            return scores.new_zeros(scores.shape[:-1])
        positions = torch.arange(scores.shape[-1], device=scores.device)
        last_idx = torch.where(m, positions, torch.zeros_like(positions)).amax(-1, keepdim=True)
        out = scores.gather(-1, last_idx).squeeze(-1)
    else:
        raise ValueError(f"unknown aggregation {how!r}; expected one of {AGGREGATIONS}")
    return torch.where(has_any, out, zero)
