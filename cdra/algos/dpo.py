"""Direct preference optimization (sigmoid loss on summed response log probs).

How a pair travels to the learner: see `cdra.algos.experience` (one `Sample` per pair).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from cdra.algos.experience import Sample, rejected_view
from cdra.algos.logprobs import get_response_log_probs
from cdra.algos.sft import encode_without_special_tokens

if TYPE_CHECKING:  # transformers only as a type
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["dpo_loss", "dpo_losses", "diverging_masks", "attach_reference_logprobs", "compute_per_instance_dpo_loss", "sequence_log_prob"]


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO sigmoid loss from summed response log probs, each (batch,) (or scalars).

    Implicit rewards r_c = beta * (pi_c - ref_c), r_r = beta * (pi_r - ref_r); margin
    m = r_c - r_r; loss = mean(-log sigmoid(m)) (with ``label_smoothing`` eps, conservative DPO:
    -(1 - eps) log sigmoid(m) - eps log sigmoid(-m)). Equal policy and reference give log 2.

    Metadata (detached): ``chosen_rewards``, ``rejected_rewards`` (batch,), scalar ``accuracy``
    (fraction with r_c > r_r) and ``margin`` (mean r_c - r_r).
    """
    losses, metadata = dpo_losses(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, label_smoothing)
    return losses.mean(), metadata


def dpo_losses(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair DPO losses (batch,) and the metadata of :func:`dpo_loss` (which is their mean):
    a learner that normalizes over pairs of every rank needs the sum, not a local mean."""
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    margins = chosen_rewards - rejected_rewards
    losses = -F.logsigmoid(margins)
    if label_smoothing:
        losses = (1.0 - label_smoothing) * losses - label_smoothing * F.logsigmoid(-margins)
    metadata = {
        "chosen_rewards": chosen_rewards.detach(),
        "rejected_rewards": rejected_rewards.detach(),
        "accuracy": (chosen_rewards > rejected_rewards).float().mean().detach(),
        "margin": margins.detach().float().mean(),
    }
    return losses, metadata


def diverging_masks(
    chosen_labels: torch.Tensor,
    chosen_mask: torch.Tensor,
    rejected_labels: torch.Tensor,
    rejected_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step-DPO: the response masks with the prefix both responses share removed.

    All inputs are (batch, seq) with both responses starting at the same position (one prompt).
    A position belongs to the shared prefix while every response position up to it holds the
    same token in both; from the first difference (or the end of the shorter response) on,
    each response keeps its own mask. Returns float masks (chosen, rejected).
    """
    chosen, rejected = chosen_mask.bool(), rejected_mask.bool()
    in_response = chosen | rejected
    agree = ~in_response | (chosen & rejected & (chosen_labels == rejected_labels))
    shared = torch.cumprod(agree.long(), dim=-1).bool() & in_response
    return (chosen & ~shared).float(), (rejected & ~shared).float()


def _device_of(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def sequence_log_prob(model: PreTrainedModel, prompt_ids: list[int], response_ids: list[int]) -> torch.Tensor:
    """Sum of log p(response token | prefix) over the response tokens of prompt + response.

    With an empty prompt the first response token has no prefix and is not scored.
    """
    full = list(prompt_ids) + list(response_ids)
    if len(full) < 2:
        raise ValueError("prompt + response must have at least two tokens")
    ids = torch.tensor([full], dtype=torch.long, device=_device_of(model))
    log_probs = get_response_log_probs(model, ids[:, :-1], ids[:, 1:])["log_probs"][0]
    start = max(len(prompt_ids) - 1, 0)
    return log_probs[start:].sum()


def compute_per_instance_dpo_loss(
    lm: PreTrainedModel,
    lm_ref: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    beta: float,
    prompt: str,
    response_chosen: str,
    response_rejected: str,
) -> torch.Tensor:
    """DPO loss of one preference pair, as a scalar tensor on ``lm``'s device.

    Each sequence is prompt tokens + response tokens + the tokenizer's EOS (when it has one),
    prompt and response tokenized separately without special tokens. Log probs are summed over
    the response tokens (and EOS) only. The reference runs without gradient, on its own device.
    """
    prompt_ids, chosen_ids, rejected_ids = encode_without_special_tokens(
        tokenizer, [prompt, response_chosen, response_rejected]
    )
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None:
        chosen_ids = chosen_ids + [int(eos)]
        rejected_ids = rejected_ids + [int(eos)]
    pi_c = sequence_log_prob(lm, prompt_ids, chosen_ids)
    pi_r = sequence_log_prob(lm, prompt_ids, rejected_ids)
    with torch.no_grad():
        device = pi_c.device
        ref_c = sequence_log_prob(lm_ref, prompt_ids, chosen_ids).to(device)
        ref_r = sequence_log_prob(lm_ref, prompt_ids, rejected_ids).to(device)
    loss, _ = dpo_loss(pi_c, pi_r, ref_c, ref_r, beta)
    return loss


def attach_reference_logprobs(pairs: list[Sample], logprobs_of: Callable[[list[Sample]], list[list[float]]]) -> list[Sample]:
    """Fill `ref_logprobs` and `rejected_ref_logprobs` of DPO pairs, once, from `logprobs_of`
    (samples -> per-response-token log-probs: `LearnerGroup.logprobs` before the first update,
    whose weights are then the reference, or a `ReferenceModel`). Both sides go in one call."""
    chosen = [Sample(prompt_ids=p.prompt_ids, response_ids=p.response_ids, prompt_id=p.prompt_id) for p in pairs]
    scored = logprobs_of(chosen + [rejected_view(p) for p in pairs])
    for i, pair in enumerate(pairs):
        pair.ref_logprobs, pair.rejected_ref_logprobs = list(scored[i]), list(scored[len(pairs) + i])
    return pairs
