"""Per-token log-probabilities and entropies from causal-LM logits."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # transformers only as a type
    from transformers import PreTrainedModel

__all__ = ["compute_entropy", "log_probs_from_logits", "get_response_log_probs"]

# Rows (batch * seq positions) processed at once: bounds the float32 copy of the logits that
# the reductions below materialize to chunk_size * vocab floats.
DEFAULT_CHUNK_ROWS = 1024


def _chunks(n: int, chunk_size: int | None):
    step = n if not chunk_size or chunk_size <= 0 else chunk_size
    for start in range(0, n, max(step, 1)):
        yield slice(start, min(start + step, n))


def compute_entropy(logits: torch.Tensor, chunk_size: int | None = DEFAULT_CHUNK_ROWS) -> torch.Tensor:
    """Entropy of the next-token distribution at every position: logits (..., vocab) -> (...).

    H = logsumexp(z) - sum_v softmax(z)_v * z_v, computed in float32 from ``log_softmax``;
    tokens with probability 0 (``-inf`` logits) contribute 0 rather than NaN. Rows are processed
    ``chunk_size`` at a time to bound memory. Differentiable; detach the result when it is only
    logged.
    """
    lead = logits.shape[:-1]
    flat = logits.reshape(-1, logits.shape[-1])
    out = []
    for sl in _chunks(flat.shape[0], chunk_size):
        z = flat[sl].float()
        logp = torch.log_softmax(z, dim=-1)
        p = logp.exp()
        plogp = torch.where(p > 0, p * logp, torch.zeros((), dtype=p.dtype, device=p.device))
        out.append(-plogp.sum(-1))
    if not out:
        return logits.new_zeros(lead, dtype=torch.float32)
    return torch.cat(out).reshape(lead)


def log_probs_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, chunk_size: int | None = DEFAULT_CHUNK_ROWS
) -> torch.Tensor:
    """log softmax(logits)[label] at every position: logits (..., vocab), labels (...) -> (...).

    Memory-friendly: never keeps a full log-softmax of the batch; each chunk of rows gathers the
    label logit and subtracts ``logsumexp`` in float32. Labels < 0 (e.g. an ignore index of
    -100) give 0 at their position.
    """
    lead = logits.shape[:-1]
    if labels.shape != lead:
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match logits {tuple(logits.shape)}")
    flat = logits.reshape(-1, logits.shape[-1])
    flat_labels = labels.reshape(-1).to(device=logits.device, dtype=torch.long)
    valid = flat_labels >= 0
    safe_labels = flat_labels.clamp(min=0)
    out = []
    for sl in _chunks(flat.shape[0], chunk_size):
        z = flat[sl]
        picked = z.gather(-1, safe_labels[sl].unsqueeze(-1)).squeeze(-1).float()
        out.append(picked - torch.logsumexp(z.float(), dim=-1))
    if not out:
        return logits.new_zeros(lead, dtype=torch.float32)
    result = torch.cat(out)
    result = torch.where(valid, result, torch.zeros((), dtype=result.dtype, device=result.device))
    return result.reshape(lead)


def get_response_log_probs(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    return_token_entropy: bool = False,
    attention_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``input_ids`` and score ``labels`` (both (batch, seq)).

    Returns ``{"log_probs": (batch, seq)}`` with log p(labels[t] | input_ids[:t+1]) from
    ``model(input_ids).logits``, plus ``"token_entropy"`` (batch, seq) when asked. Both are
    float32 and carry gradients when the model does. ``attention_mask`` is passed through when
    given (right padding needs none for a causal model: padding comes after every real token).
    """
    kwargs = {} if attention_mask is None else {"attention_mask": attention_mask}
    logits = model(input_ids, **kwargs).logits
    result = {"log_probs": log_probs_from_logits(logits, labels)}
    if return_token_entropy:
        result["token_entropy"] = compute_entropy(logits)
    return result
