"""Supervised fine-tuning: prompt/response tokenization and the response-only NLL step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from cdra.algos.masking import masked_normalize

if TYPE_CHECKING:  # transformers only as a type
    from transformers import PreTrainedTokenizerBase

__all__ = ["tokenize_prompt_and_output", "sft_microbatch_train_step", "encode_without_special_tokens"]


def encode_without_special_tokens(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, with no BOS/EOS or other special tokens added."""
    if len(texts) == 0:
        return []
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def _pad_id(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    return 0 if pad is None else int(pad)


def tokenize_prompt_and_output(
    prompt_strs: Sequence[str],
    output_strs: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
) -> dict[str, torch.Tensor]:
    """Tokenize (prompt, output) pairs for next-token training on the output only.

    Prompt and output are tokenized separately without special tokens, concatenated, and
    right-padded with ``tokenizer.pad_token_id`` (falling back to ``eos_token_id``, then 0) to
    the longest pair in the batch (length L). Returns, each of shape (batch, L - 1):

    - ``input_ids``: full[:, :-1] (long)
    - ``labels``: full[:, 1:] (long)
    - ``response_mask``: bool, True on the positions of ``labels`` that are output tokens
      (neither prompt nor padding).
    """
    if len(prompt_strs) != len(output_strs):
        raise ValueError(f"{len(prompt_strs)} prompts but {len(output_strs)} outputs")
    prompts = encode_without_special_tokens(tokenizer, prompt_strs)
    outputs = encode_without_special_tokens(tokenizer, output_strs)
    pad = _pad_id(tokenizer)
    batch = len(prompts)
    max_len = max((len(p) + len(o) for p, o in zip(prompts, outputs)), default=1)
    max_len = max(max_len, 1)
    full = torch.full((batch, max_len), pad, dtype=torch.long)
    is_output = torch.zeros((batch, max_len), dtype=torch.bool)
    for i, (p, o) in enumerate(zip(prompts, outputs)):
        ids = p + o
        if ids:
            full[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        is_output[i, len(p) : len(ids)] = True
    return {
        "input_ids": full[:, :-1].contiguous(),
        "labels": full[:, 1:].contiguous(),
        "response_mask": is_output[:, 1:].contiguous(),
    }


def sft_microbatch_train_step(
    policy_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    gradient_accumulation_steps: int,
    normalize_constant: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Response-only negative log-likelihood on one microbatch, then ``backward()``.

    loss = -mean_over_batch(masked_sum(log_probs, response_mask, per example) / normalize_constant)
           / gradient_accumulation_steps

    Returns the (detached) loss that was backpropagated and metadata: ``unscaled_loss`` (before
    the division by gradient_accumulation_steps), ``num_response_tokens`` and
    ``mean_log_prob`` (per response token).
    """
    per_example = masked_normalize(policy_log_probs, response_mask, normalize_constant, dim=-1)
    unscaled = -per_example.mean()
    loss = unscaled / gradient_accumulation_steps
    loss.backward()
    mask = response_mask.bool()
    with torch.no_grad():
        n_tokens = mask.sum()
        mean_lp = torch.where(mask, policy_log_probs.detach(), 0.0).sum() / n_tokens.clamp(min=1)
    metadata = {
        "unscaled_loss": unscaled.detach(),
        "num_response_tokens": n_tokens,
        "mean_log_prob": mean_lp,
    }
    return loss.detach(), metadata
