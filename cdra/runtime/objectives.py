"""What the learner optimizes: a small declarative `Objective` and the loss it maps to.

Recipes pick an Objective; the learner calls `compute_loss` per micro-batch. The tensor math is
all in `cdra.algos`; this module only wires model outputs to it.

Normalization. `compute_loss` returns a micro-batch's loss as a *sum* over its loss units, and
`loss_units` counts those units: sequences (length_normalization "mean" / "constant", and DPO
pairs), response tokens ("token_mean") or labelled step tokens (PRM). The learner divides every
micro-batch's sum by the units of the whole optimizer step over all ranks, so any sharding and
micro-batching give the gradient of the full batch. A sample with `loss_weight == 0` (the filler
that evens out rank shards) takes no part in the loss or its normalizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from cdra.algos import (
    clipped_value_losses,
    compute_entropy,
    compute_policy_gradient_loss,
    compute_token_clip_loss,
    gae,
    kl_estimate,
    log_probs_from_logits,
    masked_mean,
    masked_normalize,
    masked_sum,
)
from cdra.algos.dpo import diverging_masks, dpo_losses
from cdra.algos.experience import IGNORE_LABEL
from cdra.algos.value import outcome_token_rewards, prm_token_losses

# the model head each objective trains (cdra.models.heads)
HEAD_OF_KIND = {"sft": "lm", "policy_gradient": "lm", "dpo": "lm", "ppo": "lm+value", "prm": "classifier"}


def k1_loss_problem(kl_coef: float, kl_kind: str) -> str | None:
    """Why a KL loss term would not pull toward the reference, or None. The gradient of a k1
    term (log pi - log ref) is that of log pi alone: it never sees the reference, and is zero
    in expectation over on-policy samples. k2 and k3 pull; k1 belongs in the reward."""
    if kl_coef > 0 and kl_kind == "k1":
        return "kl_kind=k1 as a loss term does not pull toward the reference (its gradient ignores it)"
    return None


@dataclass(frozen=True)
class Objective:
    kind: Literal["sft", "policy_gradient", "dpo", "ppo", "prm"] = "policy_gradient"
    loss_type: Literal["no_baseline", "reinforce_with_baseline", "grpo_clip"] = "reinforce_with_baseline"
    cliprange: float = 0.2
    # per sequence: "mean" over its response tokens or "constant" (sum / normalize_constant), then
    # the mean over sequences; "token_mean": the mean over every response token of the step
    length_normalization: Literal["mean", "constant", "token_mean"] = "mean"
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
    # dpo: implicit-reward scale, conservative-DPO label smoothing, and what to do with the prefix
    # both responses share: "score" it (plain DPO) or "skip" it (step-DPO: only where they diverge)
    beta: float = 0.1
    label_smoothing: float = 0.0
    shared_prefix: Literal["score", "skip"] = "score"
    # ppo: value-loss weight, value clip range (None: unclipped), GAE discount and lambda
    vf_coef: float = 0.5
    value_clip: float | None = 0.2
    gamma: float = 1.0
    lam: float = 0.95

    def __post_init__(self) -> None:
        problem = k1_loss_problem(self.kl_coef, self.kl_kind) or self._problem()
        if problem:
            raise ValueError(problem)

    def _problem(self) -> str | None:
        if self.kind not in HEAD_OF_KIND:
            return f"objective.kind must be one of {tuple(HEAD_OF_KIND)}, got {self.kind!r}"
        if self.length_normalization not in ("mean", "constant", "token_mean"):
            return f"objective.length_normalization must be mean, constant or token_mean, got {self.length_normalization!r}"
        if self.epochs < 1:
            return f"objective.epochs must be >= 1, got {self.epochs}"
        if not self.cliprange > 0:
            return f"objective.cliprange must be > 0, got {self.cliprange}"
        if not self.beta > 0:
            return f"objective.beta must be > 0, got {self.beta}"
        if not 0.0 <= self.label_smoothing < 0.5:
            return f"objective.label_smoothing must be in [0, 0.5), got {self.label_smoothing}"
        if self.shared_prefix not in ("score", "skip"):
            return f"objective.shared_prefix must be score or skip, got {self.shared_prefix!r}"
        if not self.vf_coef >= 0:
            return f"objective.vf_coef must be >= 0, got {self.vf_coef}"
        if self.value_clip is not None and not self.value_clip > 0:
            return f"objective.value_clip must be > 0 or None, got {self.value_clip}"
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.lam <= 1.0):
            return f"objective.gamma and objective.lam must be in [0, 1], got {self.gamma}, {self.lam}"
        if self.kind == "ppo" and self.is_cap is not None:
            return "objective.is_cap applies to policy_gradient; ppo clips its ratio instead"
        return None

    @property
    def head(self) -> str:
        """The learner head this objective trains (LearnerConfig.head)."""
        return HEAD_OF_KIND[self.kind]

    @property
    def needs_old_logprobs(self) -> bool:
        if self.kind == "ppo":
            return True
        return self.kind == "policy_gradient" and (self.loss_type == "grpo_clip" or self.is_cap is not None)


def label_logprobs(engine: torch.nn.Module, mb: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = engine(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"]).logits
    return log_probs_from_logits(logits, mb["labels"])


def label_values(engine: torch.nn.Module, mb: dict[str, torch.Tensor]) -> torch.Tensor:
    """The critic's value of each label position's prefix (an lm+value model)."""
    return engine(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"]).state_values.float()


def ppo_targets(batch: dict[str, torch.Tensor], old_values: torch.Tensor, objective: Objective) -> dict[str, torch.Tensor]:
    """GAE advantages and returns (B, L-1) from the old critic's values; per-token rewards are the
    samples' token_rewards when they have them, else each outcome reward at its last token."""
    mask = batch["response_mask"]
    rewards = batch["token_rewards"] if "token_rewards" in batch else outcome_token_rewards(batch["rewards"], mask)
    advantages, returns = gae(rewards, old_values, mask, objective.gamma, objective.lam)
    return {"advantages": advantages, "returns": returns, "old_values": torch.where(mask.bool(), old_values, 0.0)}


def _participating(mb: dict[str, torch.Tensor]) -> torch.Tensor:
    return (mb["loss_weight"] != 0).float()


def loss_units(mb: dict[str, torch.Tensor], objective: Objective) -> int:
    """What this micro-batch adds to the step's normalizer (see the module docstring)."""
    rows = _participating(mb)
    if objective.kind == "prm":
        return int(((mb["token_labels"] != IGNORE_LABEL).float() * rows[:, None]).sum())
    if objective.length_normalization == "token_mean" and objective.kind != "dpo":
        return int((mb["response_mask"] * rows[:, None]).sum())
    return int(rows.sum())


def compute_loss(engine: torch.nn.Module, mb: dict[str, torch.Tensor], objective: Objective) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one micro-batch summed over its loss units (`loss_units`), and float metrics
    (means over the micro-batch)."""
    if objective.kind == "dpo":
        total, metrics = _dpo_loss(engine, mb, objective)
    elif objective.kind == "prm":
        total, metrics = _prm_loss(engine, mb)
    else:
        total, metrics = _token_loss(engine, mb, objective)
    metrics["loss"] = float(total.detach()) / max(loss_units(mb, objective), 1)
    return total, metrics


def _token_loss(engine: torch.nn.Module, mb: dict[str, torch.Tensor], objective: Objective) -> tuple[torch.Tensor, dict[str, float]]:
    """sft, policy_gradient and ppo: a per-token loss over the response, reduced per sequence."""
    out = engine(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"])
    logp = log_probs_from_logits(out.logits, mb["labels"])
    mask = mb["response_mask"]
    metrics: dict[str, float] = {}
    with torch.no_grad():
        metrics["entropy"] = float(masked_mean(compute_entropy(out.logits.detach()), mask))
    if objective.kind == "sft":
        per_token = -logp * mb["token_weights"] if "token_weights" in mb else -logp
    else:
        if objective.kind == "ppo":
            per_token, extra = compute_token_clip_loss(mb["advantages"], logp, mb["old_logprobs"], objective.cliprange)
            value_loss = clipped_value_losses(out.state_values.float(), mb["old_values"], mb["returns"], objective.value_clip)
            per_token = per_token + objective.vf_coef * value_loss
            metrics["value_loss"] = float(masked_mean(value_loss.detach(), mask))
        else:
            per_token, extra = _policy_loss(logp, mb, objective)
        metrics.update({k: float(masked_mean(v.float(), mask)) for k, v in extra.items() if k in ("clip_fraction", "ratio")})
        if objective.kl_coef > 0:
            if "ref_logprobs" not in mb:
                raise ValueError("kl_coef > 0 but the batch has no ref_logprobs (is the reference model wired in?)")
            kl = kl_estimate(logp, mb["ref_logprobs"], objective.kl_kind)
            per_token = per_token + objective.kl_coef * kl
            metrics["kl"] = float(masked_mean(kl.detach(), mask))
    weights = mb["loss_weight"]
    if objective.length_normalization == "token_mean":
        return masked_sum(per_token * weights[:, None], mask), metrics
    if objective.length_normalization == "mean":
        per_row = masked_mean(per_token, mask, dim=-1)
    else:
        per_row = masked_normalize(per_token, mask, objective.normalize_constant, dim=-1)
    return (per_row * weights).sum(), metrics


def _dpo_loss(engine: torch.nn.Module, mb: dict[str, torch.Tensor], objective: Objective) -> tuple[torch.Tensor, dict[str, float]]:
    """Chosen and rejected in one forward pass; summed response log-probs against the reference's."""
    if "ref_logprobs" not in mb or "rejected_ref_logprobs" not in mb:
        raise ValueError("dpo needs reference log-probs on every pair (ref_logprobs and rejected_ref_logprobs): "
                         "set them with cdra.algos.dpo.attach_reference_logprobs before the first update")
    n = mb["input_ids"].shape[0]
    logits = engine(input_ids=torch.cat([mb["input_ids"], mb["rejected_input_ids"]]),
                    attention_mask=torch.cat([mb["attention_mask"], mb["rejected_attention_mask"]])).logits
    logp = log_probs_from_logits(logits, torch.cat([mb["labels"], mb["rejected_labels"]]))
    chosen_mask, rejected_mask = mb["response_mask"], mb["rejected_response_mask"]
    if objective.shared_prefix == "skip":
        chosen_mask, rejected_mask = diverging_masks(mb["labels"], chosen_mask, mb["rejected_labels"], rejected_mask)
    losses, meta = dpo_losses(
        masked_sum(logp[:n], chosen_mask, dim=-1), masked_sum(logp[n:], rejected_mask, dim=-1),
        masked_sum(mb["ref_logprobs"], chosen_mask, dim=-1), masked_sum(mb["rejected_ref_logprobs"], rejected_mask, dim=-1),
        objective.beta, objective.label_smoothing,
    )
    metrics = {"dpo_accuracy": float(meta["accuracy"]), "dpo_margin": float(meta["margin"]),
               "chosen_reward": float(meta["chosen_rewards"].mean()), "rejected_reward": float(meta["rejected_rewards"].mean())}
    return (losses * mb["loss_weight"]).sum(), metrics


def prm_logits(engine: torch.nn.Module, mb: dict[str, torch.Tensor]) -> torch.Tensor:
    """Class logits (B, L-1, K+1) aligned with the label positions: entry p classifies the token
    `labels[p]` having read it. The model reads the whole sequence (`input_ids` lacks each
    sequence's last token, usually a step end), rebuilt as the first input token + the labels."""
    ids = torch.cat([mb["input_ids"][:, :1], mb["labels"]], dim=1)
    attention = torch.cat([mb["attention_mask"][:, :1], mb["attention_mask"]], dim=1)
    return engine(input_ids=ids, attention_mask=attention).logits[:, 1:]


def _prm_loss(engine: torch.nn.Module, mb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """(K+1)-class cross entropy at the labelled (step-end) tokens."""
    if "token_labels" not in mb:
        raise ValueError("prm needs token_labels on the samples (a class at each step-end token)")
    logits = prm_logits(engine, mb)
    labels = mb["token_labels"]
    losses = prm_token_losses(logits, labels, IGNORE_LABEL)
    scored = labels != IGNORE_LABEL
    with torch.no_grad():
        accuracy = masked_mean((logits.argmax(-1) == labels).float(), scored)
    return (losses * mb["loss_weight"][:, None]).sum(), {"prm_accuracy": float(accuracy)}


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
