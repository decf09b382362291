"""The experience record and the one place where padding and shapes are decided.

A `Sample` is one response to one prompt with everything the learner needs. `collate` turns a
list of them into right-padded tensors in the SFT convention: `input_ids = full[:-1]`,
`labels = full[1:]`, so response token j of a sample sits at label position
`len(prompt) - 1 + j`. Every per-token field (logprobs, rewards, advantages, labels) is placed
there.

A DPO pair is one `Sample`: `response_ids` is the chosen response and `rejected_ids` the
rejected one to the same prompt (`ref_logprobs` / `rejected_ref_logprobs` their reference
log-probs). One sample per pair keeps a pair whole through sharding, shuffling and
micro-batching, all of which cut rows. `collate` then adds `rejected_*` tensors of the same
width, row i of each belonging to pair i.

A PRM example is a `Sample` whose `token_labels` give the class (0..K) of each step-end response
token and `IGNORE_LABEL` at every other token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

IGNORE_LABEL = -100  # token_labels value of a token that is not scored (not a step end)

@dataclass
class Sample:
    prompt_ids: list[int]
    response_ids: list[int]
    rollout_logprobs: list[float] | None = None  # behaviour policy, per response token
    ref_logprobs: list[float] | None = None
    reward: float = 0.0  # scalar (outcome) reward
    token_rewards: list[float] | None = None  # dense rewards per response token
    advantage: float | None = None  # sequence-level advantage
    token_advantages: list[float] | None = None  # token-level advantage (dense recipes, GAE)
    loss_weight: float = 1.0  # e.g. 0 for SFT examples that should be ignored
    token_weights: list[float] | None = None  # SFT: per response token weight (None: all 1)
    rejected_ids: list[int] | None = None  # DPO: the rejected response (response_ids is the chosen one)
    rejected_ref_logprobs: list[float] | None = None  # DPO: reference log-probs of rejected_ids
    token_labels: list[int] | None = None  # PRM: class per response token, IGNORE_LABEL where unscored
    prompt_id: str = ""
    group_id: int = 0
    policy_version: int = 0
    scorer_version: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.prompt_ids:
            raise ValueError(f"sample {self.prompt_id!r}: empty prompt")
        n = len(self.response_ids)
        for name in ("rollout_logprobs", "ref_logprobs", "token_rewards", "token_advantages", "token_weights", "token_labels"):
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise ValueError(f"sample {self.prompt_id!r}: {name} has {len(values)} entries for {n} response tokens")
        if self.rejected_ref_logprobs is not None and len(self.rejected_ref_logprobs) != len(self.rejected_ids or []):
            raise ValueError(f"sample {self.prompt_id!r}: rejected_ref_logprobs has {len(self.rejected_ref_logprobs)} entries "
                             f"for {len(self.rejected_ids or [])} rejected tokens")
        if self.rejected_ids is not None and not self.rejected_ids:
            raise ValueError(f"sample {self.prompt_id!r}: empty rejected response")


def rejected_view(sample: Sample) -> Sample:
    """The rejected side of a DPO pair as a plain sample (to score it with any log-prob source)."""
    if sample.rejected_ids is None:
        raise ValueError(f"sample {sample.prompt_id!r} is not a DPO pair (no rejected_ids)")
    return Sample(prompt_ids=sample.prompt_ids, response_ids=sample.rejected_ids, ref_logprobs=sample.rejected_ref_logprobs,
                  prompt_id=sample.prompt_id, group_id=sample.group_id)


def response_positions(sample: Sample) -> slice:
    """Positions of the response tokens in `labels` (see module docstring)."""
    start = len(sample.prompt_ids) - 1
    return slice(start, start + len(sample.response_ids))


def collate(samples: list[Sample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of samples into the learner's tensors.

    Returns input_ids, labels, attention_mask, response_mask (all (B, L-1)), advantages (B, 1)
    or (B, L-1) when any sample has token advantages, rewards (B, 1), loss_weight (B,), and
    rollout_logprobs / ref_logprobs / token_rewards (B, L-1) when every sample has them, and
    token_weights (B, L-1) when any sample has them (1 on the response tokens of the others),
    token_labels (B, L-1, long, IGNORE_LABEL off the labelled tokens) when any sample has them.
    DPO pairs (every sample or none) add rejected_input_ids, rejected_labels,
    rejected_attention_mask, rejected_response_mask and, when every pair has them,
    rejected_ref_logprobs, all as wide as the chosen tensors.
    """
    if not samples:
        raise ValueError("collate: no samples")
    for s in samples:
        s.validate()
    pairs = sum(s.rejected_ids is not None for s in samples)
    if pairs not in (0, len(samples)):
        raise ValueError(f"collate: {pairs} of {len(samples)} samples are DPO pairs; a batch holds pairs only or none")
    width = max(len(s.prompt_ids) + max(len(s.response_ids), len(s.rejected_ids or [])) for s in samples) - 1
    out = _sequences(samples, [s.response_ids for s in samples], width, pad_id)
    if pairs:
        rejected = _sequences(samples, [s.rejected_ids for s in samples], width, pad_id)
        out.update({f"rejected_{k}": v for k, v in rejected.items()})
        if all(s.rejected_ref_logprobs is not None for s in samples):
            out["rejected_ref_logprobs"] = _per_token([rejected_view(s) for s in samples], width, lambda r: r.ref_logprobs)
    out.update({
        "rewards": torch.tensor([[s.reward] for s in samples], dtype=torch.float32),
        "loss_weight": torch.tensor([s.loss_weight for s in samples], dtype=torch.float32),
    })
    if any(s.token_labels is not None for s in samples):
        out["token_labels"] = _per_token(samples, width, lambda s: s.token_labels or [IGNORE_LABEL] * len(s.response_ids),
                                         dtype=torch.long, fill=IGNORE_LABEL)
    if any(s.token_weights is not None for s in samples):
        out["token_weights"] = _per_token(samples, width, lambda s: s.token_weights or [1.0] * len(s.response_ids))
    if any(s.token_advantages is not None for s in samples):
        out["advantages"] = _per_token(samples, width, lambda s: s.token_advantages or [s.advantage or 0.0] * len(s.response_ids))
    else:
        out["advantages"] = torch.tensor([[s.advantage or 0.0] for s in samples], dtype=torch.float32)
    for key, attr in (("rollout_logprobs", "rollout_logprobs"), ("ref_logprobs", "ref_logprobs"), ("token_rewards", "token_rewards")):
        if all(getattr(s, attr) is not None for s in samples):
            out[key] = _per_token(samples, width, lambda s, a=attr: getattr(s, a))
    return out


def _sequences(samples: list[Sample], responses: list[list[int]], width: int, pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids, labels, attention_mask, response_mask of prompt + the given responses."""
    batch = len(samples)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    labels = torch.full((batch, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, width), dtype=torch.long)
    response_mask = torch.zeros((batch, width), dtype=torch.float32)
    for i, (s, response) in enumerate(zip(samples, responses)):
        full = torch.tensor(s.prompt_ids + response, dtype=torch.long)
        n = len(full) - 1
        input_ids[i, :n] = full[:-1]
        labels[i, :n] = full[1:]
        attention_mask[i, :n] = 1
        start = len(s.prompt_ids) - 1
        response_mask[i, start : start + len(response)] = 1.0
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask, "response_mask": response_mask}


def _per_token(samples: list[Sample], width: int, values_of, dtype: torch.dtype = torch.float32, fill: float = 0) -> torch.Tensor:
    out = torch.full((len(samples), width), fill, dtype=dtype)
    for i, s in enumerate(samples):
        values = values_of(s)
        if values:
            out[i, response_positions(s)] = torch.tensor(values, dtype=dtype)
    return out


def split_microbatches(batch: dict[str, torch.Tensor], size: int) -> list[dict[str, torch.Tensor]]:
    """Cut a collated batch into micro-batches of `size` rows, trimming trailing all-pad columns."""
    n = batch["input_ids"].shape[0]
    out = []
    for start in range(0, n, size):
        part = {k: v[start : start + size] for k, v in batch.items()}
        attention = part["attention_mask"]
        if "rejected_attention_mask" in part:
            attention = attention + part["rejected_attention_mask"]
        used = int(attention.sum(dim=0).nonzero().max()) + 1 if attention.any() else 1
        out.append({k: (v[:, :used] if v.dim() == 2 and v.shape[1] == batch["input_ids"].shape[1] else v) for k, v in part.items()})
    return out
