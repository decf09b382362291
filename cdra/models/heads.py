"""The models a learner trains, by head: a causal LM, a causal LM with a critic, a token classifier.

- ``lm``: the policy alone (SFT, policy gradient, DPO).
- ``lm+value``: PPO. The critic is its own token-classification model with one label, not a
  linear head on the policy's hidden states: it can then start from a different model (a PRM,
  a reward model), and the policy the engines receive stays an unmodified causal LM.
- ``classifier``: a PRM, ``AutoModelForTokenClassification`` with K+1 labels. This is the
  architecture transformers (and a served PRM actor) loads back from the exported directory,
  and its trunk's parameter names equal the causal LM's, so it starts from any policy checkpoint.

Heads that a checkpoint lacks (a classifier's or critic's ``score``) are initialized from a seed
of their own, the same on every rank and in a single-process reference built with the same call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers.utils import ModelOutput

Head = Literal["lm", "lm+value", "classifier"]
HEADS: tuple[str, ...] = ("lm", "lm+value", "classifier")
CRITIC_DIR = "critic"  # where an lm+value export writes the critic, inside the policy's directory


@dataclass
class PolicyValueOutput(ModelOutput):
    logits: torch.Tensor | None = None  # (batch, seq, vocab), the policy's
    state_values: torch.Tensor | None = None  # (batch, seq), the critic's value of each prefix ("values" would shadow dict.values, which DeepSpeed walks)


class ActorCritic(torch.nn.Module):
    """A policy (causal LM) and a critic (token classifier, one label) trained as one module."""

    def __init__(self, policy: torch.nn.Module, critic: torch.nn.Module) -> None:
        super().__init__()
        self.policy = policy
        self.critic = critic

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> PolicyValueOutput:
        logits = self.policy(input_ids=input_ids, attention_mask=attention_mask).logits
        values = self.critic(input_ids=input_ids, attention_mask=attention_mask).logits.squeeze(-1)
        return PolicyValueOutput(logits=logits, state_values=values)


def _classifier(path: str, num_labels: int, dtype: torch.dtype, seed: int) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForTokenClassification

    config = AutoConfig.from_pretrained(path, num_labels=num_labels)
    # no dropout before the score (transformers' default is 0.1): a critic's or PRM's loss, and so
    # its gradient, must be a function of the batch. Set as an attribute: Qwen2Config's
    # constructor drops the keyword, and the saved config then keeps it.
    config.classifier_dropout = 0.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # a checkpoint with another label count (a PRM as a critic) keeps its trunk, gets a new score
        return AutoModelForTokenClassification.from_pretrained(path, config=config, dtype=dtype, ignore_mismatched_sizes=True)


def load_model(path: str, head: Head, dtype: torch.dtype = torch.float32, num_labels: int = 2, critic_path: str = "",
               seed: int = 0) -> torch.nn.Module:
    """The trainable model for `head` from the HF directory `path`.

    `num_labels`: the classifier's class count (K+1). `critic_path`: the model the critic starts
    from (default `path`); its `score` is kept when it has one label, else newly initialized.
    """
    from transformers import AutoModelForCausalLM

    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")
    for where in (path, critic_path):
        if where and not os.path.isdir(where):
            raise FileNotFoundError(f"model directory does not exist: {where}")
    if head == "classifier":
        return _classifier(path, num_labels, dtype, seed)
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if head == "lm":
        return policy
    return ActorCritic(policy, _classifier(critic_path or path, 1, dtype, seed))


def head_of(model: torch.nn.Module) -> Head:
    if isinstance(model, ActorCritic):
        return "lm+value"
    return "classifier" if type(model).__name__.endswith("ForTokenClassification") else "lm"


def policy_of(model: torch.nn.Module) -> torch.nn.Module:
    """The part rollout engines receive: the causal LM (or the whole model without a critic)."""
    return model.policy if isinstance(model, ActorCritic) else model


def save_model(model: torch.nn.Module, directory: str | Path) -> list[Path]:
    """Write `model` as HF directories (`directory`; an ActorCritic's critic in `directory/critic`),
    each loadable by transformers' Auto classes; returns the directories written."""
    directory = Path(directory)
    if isinstance(model, ActorCritic):
        model.policy.save_pretrained(directory, safe_serialization=True)
        model.critic.save_pretrained(directory / CRITIC_DIR, safe_serialization=True)
        return [directory, directory / CRITIC_DIR]
    model.save_pretrained(directory, safe_serialization=True)
    return [directory]
