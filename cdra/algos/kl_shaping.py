"""The KL to an anchor paid as a per-token reward, summed to go (OpenRLHF's RLOO)."""

from __future__ import annotations

import torch

from cdra.algos.advantages import reward_to_go
from cdra.algos.kl import KLKind, kl_estimate


def kl_shaped_advantages(advantages: list[float], logprobs: list[list[float]], ref_logprobs: list[list[float]],
                         kl_coef: float, kl_kind: KLKind = "k1") -> tuple[list[list[float]], list[float]]:
    """Per-token advantages with the KL to the anchor as a per-token reward -kl_coef * kl_t:
    A_t = A - kl_coef * sum_{s >= t} kl_s, kl_t from the sampled tokens' rollout and reference
    log-probs. Also returns each response's mean per-token KL (for metrics)."""
    if not len(advantages) == len(logprobs) == len(ref_logprobs):
        raise ValueError(f"kl_shaped_advantages: {len(advantages)} advantages, {len(logprobs)} logprob and {len(ref_logprobs)} reference rows")
    shaped, kl_means = [], []
    for a, lp, ref in zip(advantages, logprobs, ref_logprobs):
        if len(lp) != len(ref) or not lp:
            raise ValueError(f"kl_shaped_advantages: response with {len(lp)} logprobs and {len(ref)} reference logprobs")
        kl = kl_estimate(torch.tensor([lp], dtype=torch.float64), torch.tensor([ref], dtype=torch.float64), kl_kind)
        to_go = reward_to_go(-kl_coef * kl, torch.ones_like(kl))[0]
        shaped.append((a + to_go).tolist())
        kl_means.append(float(kl.mean()))
    return shaped, kl_means
