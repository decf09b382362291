"""Pure tensor RL math: masks, log probs, advantages, policy/value/DPO/SFT losses, KL estimators.

Imports torch only (transformers appears only in type hints). Shapes are (batch, seq) unless a
docstring says otherwise.
"""

from cdra.algos.advantages import gae, per_position_group_normalize, reward_to_go, rloo_advantages
from cdra.algos.dpo import (
    attach_reference_logprobs,
    compute_per_instance_dpo_loss,
    diverging_masks,
    dpo_loss,
    dpo_losses,
    sequence_log_prob,
)
from cdra.algos.grpo import (
    LOSS_TYPES,
    compute_group_normalized_rewards,
    compute_grpo_clip_loss,
    compute_naive_policy_gradient_loss,
    compute_policy_gradient_loss,
    compute_token_clip_loss,
    group_normalize,
    grpo_microbatch_train_step,
)
from cdra.algos.kl import KL_KINDS, kl_estimate, kl_penalized_rewards
from cdra.algos.logprobs import compute_entropy, get_response_log_probs, log_probs_from_logits
from cdra.algos.masking import masked_mean, masked_normalize, masked_sum, masked_whiten
from cdra.algos.sft import encode_without_special_tokens, sft_microbatch_train_step, tokenize_prompt_and_output
from cdra.algos.value import (
    AGGREGATIONS,
    aggregate_step_scores,
    clipped_value_loss,
    clipped_value_losses,
    outcome_token_rewards,
    prm_step_loss,
    prm_step_scores,
    prm_token_losses,
)

__all__ = [
    # masking
    "masked_mean",
    "masked_normalize",
    "masked_sum",
    "masked_whiten",
    # log probs
    "compute_entropy",
    "get_response_log_probs",
    "log_probs_from_logits",
    # sft
    "tokenize_prompt_and_output",
    "sft_microbatch_train_step",
    "encode_without_special_tokens",
    # grpo
    "LOSS_TYPES",
    "group_normalize",
    "compute_group_normalized_rewards",
    "compute_naive_policy_gradient_loss",
    "compute_grpo_clip_loss",
    "compute_token_clip_loss",
    "compute_policy_gradient_loss",
    "grpo_microbatch_train_step",
    # advantages
    "rloo_advantages",
    "gae",
    "per_position_group_normalize",
    "reward_to_go",
    # kl
    "KL_KINDS",
    "kl_estimate",
    "kl_penalized_rewards",
    # dpo
    "dpo_loss",
    "dpo_losses",
    "diverging_masks",
    "attach_reference_logprobs",
    "compute_per_instance_dpo_loss",
    "sequence_log_prob",
    # value / prm
    "AGGREGATIONS",
    "clipped_value_loss",
    "clipped_value_losses",
    "outcome_token_rewards",
    "prm_step_loss",
    "prm_token_losses",
    "prm_step_scores",
    "aggregate_step_scores",
]
