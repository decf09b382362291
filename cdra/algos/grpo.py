"""GRPO family: group-normalized rewards and policy-gradient losses (CS336 a5 conventions).

Per-token losses are (batch, seq); sequence-level rewards/advantages are (batch, 1) and
broadcast along the sequence (a (batch,) tensor is accepted and treated as (batch, 1)).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from cdra.algos.masking import masked_mean, masked_normalize

__all__ = [
    "group_normalize",
    "compute_group_normalized_rewards",
    "compute_naive_policy_gradient_loss",
    "compute_grpo_clip_loss",
    "compute_token_clip_loss",
    "compute_policy_gradient_loss",
    "grpo_microbatch_train_step",
    "LOSS_TYPES",
]

LossType = Literal["no_baseline", "reinforce_with_baseline", "grpo_clip"]
LOSS_TYPES: tuple[str, ...] = ("no_baseline", "reinforce_with_baseline", "grpo_clip")


def _as_column(x: torch.Tensor) -> torch.Tensor:
    """(batch,) -> (batch, 1) so it broadcasts over the sequence, never over the batch."""
    return x.unsqueeze(-1) if x.dim() == 1 else x


def group_normalize(
    raw_rewards: torch.Tensor,
    group_size: int,
    eps: float,
    normalize_by_std: bool,
) -> torch.Tensor:
    """Group-relative advantages of consecutive groups of ``group_size`` rewards: (N,) -> (N,).

    A_i = r_i - mean_g, divided by (std_g + eps) when ``normalize_by_std`` (std unbiased, the
    torch default). A group whose rewards are all equal gets 0 (eps keeps it finite); with
    ``group_size == 1`` every advantage is 0.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    flat = raw_rewards.reshape(-1)
    if flat.numel() % group_size:
        raise ValueError(f"{flat.numel()} rewards do not split into groups of {group_size}")
    if not flat.is_floating_point():
        flat = flat.float()
    grouped = flat.reshape(-1, group_size)
    centered = grouped - grouped.mean(dim=1, keepdim=True)
    if normalize_by_std:
        if group_size > 1:
            std = grouped.std(dim=1, keepdim=True)
        else:
            std = torch.zeros_like(grouped)
        centered = centered / (std + eps)
    return centered.reshape(-1)


def compute_group_normalized_rewards(
    reward_fn: Callable[[str, Any], dict[str, float]],
    rollout_responses: Sequence[str],
    repeated_ground_truths: Sequence[Any],
    group_size: int,
    advantage_eps: float,
    normalize_by_std: bool,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Score every rollout with ``reward_fn(response, ground_truth)["reward"]`` and normalize per group.

    ``rollout_responses`` holds groups of ``group_size`` consecutive samples of one prompt;
    ``repeated_ground_truths`` repeats each ground truth ``group_size`` times to match.
    Returns (advantages (N,), raw_rewards (N,), metadata) where metadata has float
    ``mean_reward``, ``std_reward``, ``max_reward``, ``min_reward`` over the batch and
    ``mean_<key>`` for every other numeric key the reward function returns (e.g.
    ``mean_format_reward``, ``mean_answer_reward``).
    """
    if len(rollout_responses) != len(repeated_ground_truths):
        raise ValueError(
            f"{len(rollout_responses)} responses but {len(repeated_ground_truths)} ground truths"
        )
    scored = [reward_fn(r, gt) for r, gt in zip(rollout_responses, repeated_ground_truths)]
    raw_rewards = torch.tensor([float(s["reward"]) for s in scored], dtype=torch.float32)
    advantages = group_normalize(raw_rewards, group_size, advantage_eps, normalize_by_std)

    n = raw_rewards.numel()
    metadata: dict[str, float] = {
        "mean_reward": raw_rewards.mean().item() if n else 0.0,
        "std_reward": raw_rewards.std().item() if n > 1 else 0.0,
        "max_reward": raw_rewards.max().item() if n else 0.0,
        "min_reward": raw_rewards.min().item() if n else 0.0,
    }
    keys = [k for k in (scored[0] if scored else {}) if k != "reward"]
    for key in keys:
        vals = [s.get(key) for s in scored]
        if all(isinstance(v, (int, float, bool)) for v in vals):
            metadata[f"mean_{key}"] = float(sum(float(v) for v in vals) / len(vals))
    return advantages, raw_rewards, metadata


def compute_naive_policy_gradient_loss(
    raw_rewards_or_advantages: torch.Tensor,
    policy_log_probs: torch.Tensor,
) -> torch.Tensor:
    """Per-token REINFORCE loss -A * log p: A (batch, 1), log probs (batch, seq) -> (batch, seq)."""
    adv = _as_column(raw_rewards_or_advantages).to(policy_log_probs.dtype)
    return -adv * policy_log_probs


def compute_token_clip_loss(
    advantages: torch.Tensor,
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    cliprange: float,
    clip_ratio_c: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-clip per token with per-token (dense) advantages, all (batch, seq).

    loss = -min(rho * A, clip(rho, 1 - e, 1 + e) * A), rho = exp(log_probs - old_log_probs).
    With ``clip_ratio_c`` (> 1, dual-clip PPO) the loss of tokens with A < 0 is further capped
    at -A * clip_ratio_c, bounding the update when rho explodes on a bad action.

    Metadata (all (batch, seq)): ``ratio``; ``clipped`` (bool, the clipped surrogate was the one
    taken, i.e. the token gets no gradient from the ratio) and ``clip_fraction`` (the same as
    float, for a masked mean); ``dual_clipped`` (bool) when dual-clip is on.
    """
    if clip_ratio_c is not None and clip_ratio_c <= 1.0:
        raise ValueError(f"clip_ratio_c must be > 1, got {clip_ratio_c}")
    adv = advantages.to(log_probs.dtype)
    ratio = torch.exp(log_probs - old_log_probs)
    surr1 = ratio * adv
    surr2 = torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange) * adv
    loss = -torch.minimum(surr1, surr2)
    clipped = surr2 < surr1
    metadata: dict[str, torch.Tensor] = {"ratio": ratio.detach()}
    if clip_ratio_c is not None:
        cap = -adv * clip_ratio_c
        dual = (adv < 0) & (cap < loss)
        loss = torch.where(dual, cap, loss)
        metadata["dual_clipped"] = dual
        clipped = clipped | dual
    metadata["clipped"] = clipped
    metadata["clip_fraction"] = clipped.to(log_probs.dtype)
    return loss, metadata


def compute_grpo_clip_loss(
    advantages: torch.Tensor,
    policy_log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO-clip per-token loss with sequence-level advantages (batch, 1).

    loss = -min(rho * A, clip(rho, 1 - e, 1 + e) * A). Metadata as in
    :func:`compute_token_clip_loss`: ``ratio``, ``clipped`` (bool per token), ``clip_fraction``
    (float per token; take a masked mean over the response for the fraction).
    """
    adv = _as_column(advantages).expand_as(policy_log_probs)
    return compute_token_clip_loss(adv, policy_log_probs, old_log_probs, cliprange)


def _require(name: str, value: Any, loss_type: str) -> None:
    if value is None:
        raise ValueError(f"{name} is required for loss_type '{loss_type}'")


def compute_policy_gradient_loss(
    policy_log_probs: torch.Tensor,
    loss_type: LossType,
    raw_rewards: torch.Tensor | None = None,
    advantages: torch.Tensor | None = None,
    old_log_probs: torch.Tensor | None = None,
    cliprange: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token policy-gradient loss (batch, seq) for ``loss_type``.

    - ``no_baseline``: -raw_rewards * log p (needs ``raw_rewards``)
    - ``reinforce_with_baseline``: -advantages * log p (needs ``advantages``)
    - ``grpo_clip``: :func:`compute_grpo_clip_loss` (needs ``advantages``, ``old_log_probs``,
      ``cliprange``)

    A missing argument raises ValueError naming it.
    """
    if loss_type == "no_baseline":
        _require("raw_rewards", raw_rewards, loss_type)
        return compute_naive_policy_gradient_loss(raw_rewards, policy_log_probs), {}
    if loss_type == "reinforce_with_baseline":
        _require("advantages", advantages, loss_type)
        return compute_naive_policy_gradient_loss(advantages, policy_log_probs), {}
    if loss_type == "grpo_clip":
        _require("advantages", advantages, loss_type)
        _require("old_log_probs", old_log_probs, loss_type)
        _require("cliprange", cliprange, loss_type)
        return compute_grpo_clip_loss(advantages, policy_log_probs, old_log_probs, cliprange)
    raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}")


def grpo_microbatch_train_step(
    policy_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    gradient_accumulation_steps: int,
    loss_type: LossType,
    raw_rewards: torch.Tensor | None = None,
    advantages: torch.Tensor | None = None,
    old_log_probs: torch.Tensor | None = None,
    cliprange: float | None = None,
    length_normalization: Literal["mean", "constant", "token_mean"] = "mean",
    normalize_constant: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Policy-gradient loss on one microbatch, then ``backward()``.

    The per-token loss is reduced per example over response tokens, by masked mean
    (``length_normalization="mean"``, GRPO) or masked sum / ``normalize_constant``
    (``"constant"``, Dr. GRPO), then averaged over the batch and divided by
    ``gradient_accumulation_steps``. ``"token_mean"`` instead averages over every response
    token of the microbatch at once (DAPO-style). Examples with an empty response contribute 0.

    Returns the (detached) loss that was backpropagated and metadata: the loss function's
    tensors, ``unscaled_loss``, and for ``grpo_clip`` a scalar ``clip_fraction`` over response
    tokens (the per-token mask stays under ``clipped``).
    """
    per_token, loss_meta = compute_policy_gradient_loss(
        policy_log_probs, loss_type, raw_rewards, advantages, old_log_probs, cliprange
    )
    if length_normalization == "mean":
        unscaled = masked_mean(per_token, response_mask, dim=-1).mean()
    elif length_normalization == "constant":
        if normalize_constant is None:
            raise ValueError("normalize_constant is required for length_normalization 'constant'")
        unscaled = masked_normalize(per_token, response_mask, normalize_constant, dim=-1).mean()
    elif length_normalization == "token_mean":
        unscaled = masked_mean(per_token, response_mask)
    else:
        raise ValueError(f"unknown length_normalization {length_normalization!r}")
    loss = unscaled / gradient_accumulation_steps
    loss.backward()

    metadata = dict(loss_meta)
    metadata["unscaled_loss"] = unscaled.detach()
    if "clip_fraction" in loss_meta:
        metadata["clip_fraction"] = masked_mean(loss_meta["clip_fraction"], response_mask).detach()
    return loss.detach(), metadata
