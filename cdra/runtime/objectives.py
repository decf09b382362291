"""What the learner optimizes: a small declarative `Objective` and the loss it maps to.

Recipes pick an Objective; the learner calls `compute_loss` per micro-batch. The tensor math is
all in `cdra.algos`; this module only wires model outputs to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from cdra.algos import (
    compute_entropy,
    compute_policy_gradient_loss,
    compute_token_clip_loss,
    kl_estimate,
    log_probs_from_logits,
    masked_mean,
    masked_normalize,
)


def k1_loss_problem(kl_coef: float, kl_kind: str) -> str | None:
    """Why a KL loss term would not pull toward the reference, or None. The gradient of a k1
    term (log pi - log ref) is that of log pi alone: it never sees the reference, and is zero
    in expectation over on-policy samples. k2 and k3 pull; k1 belongs in the reward."""
    if kl_coef > 0 and kl_kind == "k1":
        return "kl_kind=k1 as a loss term does not pull toward the reference (its gradient ignores it)"
    return None


@dataclass(frozen=True)
class Objective:
    kind: Literal["sft", "policy_gradient"] = "policy_gradient"
    loss_type: Literal["no_baseline", "reinforce_with_baseline", "grpo_clip"] = "reinforce_with_baseline"
    cliprange: float = 0.2
    length_normalization: Literal["mean", "constant"] = "mean"
    normalize_constant: float = 1.0
    kl_coef: float = 0.0
    kl_kind: Literal["k1", "k2", "k3"] = "k1"
    epochs: int = 1
    shuffle: bool = True
    # where the "old" policy of the PPO ratio comes from: recomputed by the learner before the
    # update (on-policy), or the rollout engine's logprobs (async: importance-sampling correction)
    old_logprobs_source: Literal["learner", "rollout"] = "learner"
    # truncated importance weight min(pi_old/pi_behaviour, cap) for non-clip losses in async mode
    is_cap: float | None = None

    def __post_init__(self) -> None:
        problem = k1_loss_problem(self.kl_coef, self.kl_kind)
        if problem:
            raise ValueError(problem)

    @property
    def needs_old_logprobs(self) -> bool:
        return self.kind == "policy_gradient" and (self.loss_type == "grpo_clip" or self.is_cap is not None)


def label_logprobs(engine: torch.nn.Module, mb: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = engine(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"]).logits
    return log_probs_from_logits(logits, mb["labels"])


def compute_loss(engine: torch.nn.Module, mb: dict[str, torch.Tensor], objective: Objective) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one micro-batch (mean over its rows) and float metrics."""
    logits = engine(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"]).logits
    logp = log_probs_from_logits(logits, mb["labels"])
    mask = mb["response_mask"]
    metrics: dict[str, float] = {}
    with torch.no_grad():
        metrics["entropy"] = float(masked_mean(compute_entropy(logits.detach()), mask))
    if objective.kind == "sft":
        per_token = -logp * mb["token_weights"] if "token_weights" in mb else -logp
    else:
        per_token, extra = _policy_loss(logp, mb, objective)
        metrics.update({k: float(masked_mean(v.float(), mask)) for k, v in extra.items() if k in ("clip_fraction", "ratio")})
        if objective.kl_coef > 0:
            if "ref_logprobs" not in mb:
                raise ValueError("kl_coef > 0 but the batch has no ref_logprobs (is the reference model wired in?)")
            kl = kl_estimate(logp, mb["ref_logprobs"], objective.kl_kind)
            per_token = per_token + objective.kl_coef * kl
            metrics["kl"] = float(masked_mean(kl.detach(), mask))
    if objective.length_normalization == "mean":
        per_row = masked_mean(per_token, mask, dim=-1)
    else:
        per_row = masked_normalize(per_token, mask, objective.normalize_constant, dim=-1)
    weights = mb["loss_weight"]
    loss = (per_row * weights).sum() / per_row.shape[0]
    metrics["loss"] = float(loss.detach())
    return loss, metrics


def _policy_loss(logp: torch.Tensor, mb: dict[str, torch.Tensor], objective: Objective) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    advantages = mb["advantages"]
    token_level = advantages.dim() == 2 and advantages.shape[1] == logp.shape[1] and logp.shape[1] > 1
    old = mb.get("old_logprobs")
    if token_level:
        if objective.loss_type == "grpo_clip":
            return compute_token_clip_loss(advantages, logp, old, objective.cliprange)
        per_token, extra = -advantages * logp, {}
    else:
        per_token, extra = compute_policy_gradient_loss(
            logp, objective.loss_type, raw_rewards=mb["rewards"], advantages=advantages,
            old_log_probs=old, cliprange=objective.cliprange,
        )
    if objective.is_cap is not None and objective.loss_type != "grpo_clip":
        # behaviour logprobs are the rollout's; old are the learner's recomputation
        if "rollout_logprobs" not in mb:
            raise ValueError("is_cap needs the rollout engine's logprobs on every sample")
        behaviour = mb["rollout_logprobs"]
        weight = torch.exp((old - behaviour).clamp(max=20.0)).clamp(max=objective.is_cap).detach()
        per_token = per_token * weight
    return per_token, extra
