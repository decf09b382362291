"""Advantage estimators: RLOO, GAE, per-position group normalization, reward-to-go.

Token-level inputs are (batch, seq) with a mask of valid (response) positions. Outputs are 0 at
masked-out positions, and values there never affect the valid ones. Results carry no gradient.
"""

from __future__ import annotations

import torch

__all__ = ["rloo_advantages", "gae", "per_position_group_normalize", "reward_to_go"]


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out: A_i = r_i - mean of the other k-1 rewards of its group.

    ``rewards`` (num_groups * k,) holds groups of ``group_size`` consecutive samples; returns
    (num_groups * k,). Equal to k/(k-1) * (r_i - mean_g). ``group_size == 1`` gives 0.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    flat = rewards.detach().reshape(-1)
    if flat.numel() % group_size:
        raise ValueError(f"{flat.numel()} rewards do not split into groups of {group_size}")
    if not flat.is_floating_point():
        flat = flat.float()
    if group_size == 1:
        return torch.zeros_like(flat)
    grouped = flat.reshape(-1, group_size)
    others_mean = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - others_mean).reshape(-1)


@torch.no_grad()
def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over the masked positions of each row.

    Runs right to left and only over positions where ``mask`` is 1: a masked-out position
    (padding, or a hole such as an environment turn) is skipped, so the next valid position is
    the "next state". The value after a row's last valid position is 0 (episode ends):

        delta_t = r_t + gamma * V_next - V_t,   A_t = delta_t + gamma * lam * A_next.

    Returns (advantages, returns = advantages + values), both (batch, seq) and 0 where the mask
    is 0. With gamma = lam = 1, A_t = reward_to_go_t - V_t.
    """
    m = mask.bool()
    dtype = torch.promote_types(torch.promote_types(rewards.dtype, values.dtype), torch.float32)
    r = torch.where(m, rewards.to(dtype), 0.0)
    v = torch.where(m, values.to(dtype), 0.0)
    batch, seq = r.shape
    advantages = torch.zeros_like(r)
    next_value = torch.zeros(batch, dtype=r.dtype, device=r.device)
    next_adv = torch.zeros_like(next_value)
    for t in range(seq - 1, -1, -1):
        valid = m[:, t]
        delta = r[:, t] + gamma * next_value - v[:, t]
        adv_t = delta + gamma * lam * next_adv
        adv_t = torch.where(valid, adv_t, torch.zeros_like(adv_t))
        advantages[:, t] = adv_t
        next_value = torch.where(valid, v[:, t], next_value)
        next_adv = torch.where(valid, adv_t, next_adv)
    returns = torch.where(m, advantages + v, torch.zeros_like(advantages))
    return advantages, returns


@torch.no_grad()
def per_position_group_normalize(
    token_rewards: torch.Tensor,
    mask: torch.Tensor,
    group_size: int,
    eps: float = 1e-8,
    unbiased: bool = True,
) -> torch.Tensor:
    """CDRA advantage: normalize each token position across the members of its group.

    ``token_rewards`` (num_groups * k, seq) holds groups of ``group_size`` consecutive rows.
    At position t of a group, over the n members whose mask is 1 there:
    A = (R - mean) / (std + eps), std unbiased (torch default; ``unbiased=False`` for the
    population std). A position valid for fewer than two members gets 0, as does every
    masked-out position; a position where all valid members agree gets 0.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    batch, seq = token_rewards.shape
    if batch % group_size:
        raise ValueError(f"{batch} rows do not split into groups of {group_size}")
    m = mask.bool().reshape(-1, group_size, seq)
    dtype = torch.promote_types(token_rewards.dtype, torch.float32)
    r = torch.where(m, token_rewards.reshape(-1, group_size, seq).to(dtype), 0.0)
    n = m.sum(dim=1, keepdim=True).to(dtype)
    mean = r.sum(dim=1, keepdim=True) / n.clamp(min=1)
    centered = torch.where(m, r - mean, 0.0)
    denom = (n - 1) if unbiased else n
    std = (centered.pow(2).sum(dim=1, keepdim=True) / denom.clamp(min=1)).sqrt()
    adv = centered / (std + eps)
    adv = torch.where(m & (n >= 2), adv, 0.0)
    return adv.reshape(batch, seq)


@torch.no_grad()
def reward_to_go(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Suffix sum of rewards over the masked positions: G_t = sum_{t' >= t, mask} gamma^k r_t'.

    (batch, seq) -> (batch, seq), 0 where the mask is 0. With ``gamma != 1`` the discount counts
    valid positions only (masked-out ones are skipped, as in :func:`gae`).
    """
    m = mask.bool()
    r = torch.where(m, token_rewards, torch.zeros((), dtype=token_rewards.dtype, device=token_rewards.device))
    if gamma == 1.0:
        out = r.flip(-1).cumsum(-1).flip(-1)
        return torch.where(m, out, torch.zeros_like(out))
    advantages, _ = gae(r, torch.zeros_like(r), m, gamma=gamma, lam=1.0)
    return advantages
