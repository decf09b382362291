"""Per-token KL estimators between the policy and a reference model (Schulman's k1/k2/k3)."""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["kl_estimate", "kl_penalized_rewards", "KL_KINDS", "LOG_RATIO_CLAMP"]

KLKind = Literal["k1", "k2", "k3"]
KL_KINDS: tuple[str, ...] = ("k1", "k2", "k3")
LOG_RATIO_CLAMP = 20.0


def kl_estimate(log_probs: torch.Tensor, ref_log_probs: torch.Tensor, kind: KLKind) -> torch.Tensor:
    """Per-token estimate of KL(policy || ref) from sampled-token log probs (same shapes).

    With log_ratio = log_probs - ref_log_probs, clamped to [-20, 20] for stability:

    - ``k1`` = log_ratio (unbiased, can be negative)
    - ``k2`` = 0.5 * log_ratio^2
    - ``k3`` = exp(-log_ratio) + log_ratio - 1, i.e. exp(ref - logp) - (ref - logp) - 1
      (unbiased and always >= 0)

    Differentiable with respect to ``log_probs`` (use it as a loss term) inside the clamp range.
    """
    log_ratio = (log_probs - ref_log_probs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio.pow(2)
    if kind == "k3":
        neg = -log_ratio
        return torch.exp(neg) - neg - 1.0
    raise ValueError(f"unknown KL kind {kind!r}; expected one of {KL_KINDS}")


def kl_penalized_rewards(
    token_rewards: torch.Tensor,
    log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    kind: KLKind = "k1",
) -> torch.Tensor:
    """Token rewards with the KL penalty folded in: r_t - beta * kl_t on masked positions, 0 elsewhere.

    The result is a reward, so it is computed without gradient.
    """
    with torch.no_grad():
        kl = kl_estimate(log_probs.detach(), ref_log_probs.detach(), kind)
        out = token_rewards.detach() - beta * kl
        return torch.where(mask.bool(), out, torch.zeros((), dtype=out.dtype, device=out.device))
