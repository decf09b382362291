"""Critique-RL's advantages (ALGORITHMS.md §2): RLOO within each prompt's critiques, whitened."""

from __future__ import annotations

import torch

from cdra.algos.advantages import rloo_advantages
from cdra.algos.masking import masked_whiten


def critique_advantages(rewards: list[float], group_size: int, whiten: bool = True) -> list[float]:
    """RLOO within each prompt's group of critiques, then (optionally) whitened over the batch."""
    advantages = rloo_advantages(torch.tensor(rewards, dtype=torch.float32), group_size)
    if whiten:
        advantages = masked_whiten(advantages, torch.ones_like(advantages))
    return advantages.tolist()
