"""Dense step rewards (CDRA, ALGORITHMS.md §4): a judge's step scores laid on the tokens of
their steps, and the two advantages built from them.

A sample's steps are given as token spans ``(start, end)`` (end exclusive) into its response
tokens, in order and not overlapping; tokens outside every span (text before "Step 1:") get
no step reward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cdra.algos.advantages import per_position_group_normalize

__all__ = ["dense_step_rewards", "step_rewards_to_go", "per_step_return_advantages", "spread_over_steps"]

Span = tuple[int, int]


def _check_spans(spans: Sequence[Span], num_tokens: int) -> None:
    previous_end = 0
    for start, end in spans:
        if not previous_end <= start <= end <= num_tokens:
            raise ValueError(f"step token spans must be ordered, disjoint and within {num_tokens} tokens: {list(spans)}")
        previous_end = end


def spread_over_steps(spans: Sequence[Span], values: Sequence[float], num_tokens: int) -> list[float]:
    """Per-token list: each step's value on every token of its span, 0 elsewhere."""
    if len(spans) != len(values):
        raise ValueError(f"{len(spans)} step spans but {len(values)} values")
    _check_spans(spans, num_tokens)
    out = [0.0] * num_tokens
    for (start, end), value in zip(spans, values):
        out[start:end] = [float(value)] * (end - start)
    return out


def dense_step_rewards(spans: Sequence[Span], scores: Sequence[float], num_tokens: int,
                       outcome: float = 0.0, outcome_weight: float = 0.0) -> list[float]:
    """CDRA's token rewards: each step's score on its tokens, plus ``outcome_weight * outcome``
    (e.g. the answer checker's 0/1) on every response token, so that the outcome term moves the
    whole response as GRPO's sequence reward does."""
    bonus = outcome_weight * outcome
    return [r + bonus for r in spread_over_steps(spans, scores, num_tokens)]


def step_rewards_to_go(scores: Sequence[float]) -> list[float]:
    """G_k = s_k + s_{k+1} + ... + s_last for each step k."""
    out, running = [0.0] * len(scores), 0.0
    for k in range(len(scores) - 1, -1, -1):
        running += scores[k]
        out[k] = running
    return out


def per_step_return_advantages(group_scores: Sequence[Sequence[float]], eps: float = 1e-8) -> list[list[float]]:
    """The per-step return-to-go option: each member's step returns (`step_rewards_to_go`),
    normalised per step index across the members of the group that have that step,
    (G - mean) / (std + eps) with the unbiased std; a step index fewer than two members reach,
    or on which all agree, gets 0 (as `per_position_group_normalize`)."""
    width = max((len(s) for s in group_scores), default=0)
    if width == 0:
        return [[] for _ in group_scores]
    returns = torch.zeros(len(group_scores), width, dtype=torch.float64)
    mask = torch.zeros(len(group_scores), width, dtype=torch.bool)
    for i, scores in enumerate(group_scores):
        returns[i, : len(scores)] = torch.tensor(step_rewards_to_go(scores), dtype=torch.float64)
        mask[i, : len(scores)] = True
    adv = per_position_group_normalize(returns, mask, group_size=len(group_scores), eps=eps)
    return [adv[i, : len(scores)].tolist() for i, scores in enumerate(group_scores)]
