"""The experience record and the one place where padding and shapes are decided.

A `Sample` is one response to one prompt with everything the learner needs. `collate` turns a
list of them into right-padded tensors in the SFT convention: `input_ids = full[:-1]`,
`labels = full[1:]`, so response token j of a sample sits at label position
`len(prompt) - 1 + j`. Every per-token field (logprobs, rewards, advantages) is placed there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


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
    prompt_id: str = ""
    group_id: int = 0
    policy_version: int = 0
    scorer_version: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.prompt_ids:
            raise ValueError(f"sample {self.prompt_id!r}: empty prompt")
        n = len(self.response_ids)
        for name in ("rollout_logprobs", "ref_logprobs", "token_rewards", "token_advantages", "token_weights"):
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise ValueError(f"sample {self.prompt_id!r}: {name} has {len(values)} entries for {n} response tokens")


def response_positions(sample: Sample) -> slice:
    """Positions of the response tokens in `labels` (see module docstring)."""
    start = len(sample.prompt_ids) - 1
    return slice(start, start + len(sample.response_ids))


def collate(samples: list[Sample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of samples into the learner's tensors.

    Returns input_ids, labels, attention_mask, response_mask (all (B, L-1)), advantages (B, 1)
    or (B, L-1) when any sample has token advantages, rewards (B, 1), loss_weight (B,), and
    rollout_logprobs / ref_logprobs / token_rewards (B, L-1) when every sample has them, and
    token_weights (B, L-1) when any sample has them (1 on the response tokens of the others).
    """
    if not samples:
        raise ValueError("collate: no samples")
    for s in samples:
        s.validate()
    width = max(len(s.prompt_ids) + len(s.response_ids) for s in samples) - 1
    batch = len(samples)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    labels = torch.full((batch, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, width), dtype=torch.long)
    response_mask = torch.zeros((batch, width), dtype=torch.float32)
    for i, s in enumerate(samples):
        full = torch.tensor(s.prompt_ids + s.response_ids, dtype=torch.long)
        n = len(full) - 1
        input_ids[i, :n] = full[:-1]
        labels[i, :n] = full[1:]
        attention_mask[i, :n] = 1
        response_mask[i, response_positions(s)] = 1.0
    out = {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": attention_mask,
        "response_mask": response_mask,
        "rewards": torch.tensor([[s.reward] for s in samples], dtype=torch.float32),
        "loss_weight": torch.tensor([s.loss_weight for s in samples], dtype=torch.float32),
    }
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


def _per_token(samples: list[Sample], width: int, values_of) -> torch.Tensor:
    out = torch.zeros((len(samples), width), dtype=torch.float32)
    for i, s in enumerate(samples):
        values = values_of(s)
        if values:
            out[i, response_positions(s)] = torch.tensor(values, dtype=torch.float32)
    return out


def split_microbatches(batch: dict[str, torch.Tensor], size: int) -> list[dict[str, torch.Tensor]]:
    """Cut a collated batch into micro-batches of `size` rows, trimming trailing all-pad columns."""
    n = batch["input_ids"].shape[0]
    out = []
    for start in range(0, n, size):
        part = {k: v[start : start + size] for k, v in batch.items()}
        used = int(part["attention_mask"].sum(dim=0).nonzero().max()) + 1 if part["attention_mask"].any() else 1
        out.append({k: (v[:, :used] if v.dim() == 2 and v.shape[1] == batch["input_ids"].shape[1] else v) for k, v in part.items()})
    return out
