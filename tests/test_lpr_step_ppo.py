"""Step PPO's rewards (pure): the PRM's step scores sit on step-end tokens, a KL penalty on
every token, each token's reward clipped at +-5; and GAE carries them back as ALGORITHMS.md
section 5 says (gamma 1, lambda 0.95)."""

from __future__ import annotations

import pytest
import torch

from cdra.algos.step_rewards import kl_penalties, step_end_indices, step_ppo_rewards
from cdra.runtime.objectives import Objective, ppo_targets


def test_step_scores_sit_on_each_steps_last_token():
    # 8 response tokens; steps [0, 3), [3, 6), an empty step at 6, then 2 tokens of answer line
    spans = [(0, 3), (3, 6), (6, 6)]
    zeros = [0.0] * 8
    rewards = step_ppo_rewards(spans, [0.9, 0.2, 0.7], zeros, zeros, kl_coef=0.1)
    assert step_end_indices(spans) == [2, 5, None]
    assert rewards == [0.0, 0.0, 0.9, 0.0, 0.0, 0.2, 0.0, 0.0]  # the empty step pays nothing


def test_kl_per_token_and_clip_at_five():
    spans = [(0, 2), (2, 4)]
    logprobs = [-1.0, -0.5, -2.0, -60.0]
    ref = [-1.5, -0.5, -1.0, -1.0]
    assert kl_penalties(logprobs, ref, 0.1) == pytest.approx([-0.05, 0.0, 0.1, 5.9])
    rewards = step_ppo_rewards(spans, [0.8, 7.0], logprobs, ref, kl_coef=0.1, clip=5.0, outcome=1.0)
    # token 1: 0.8 - 0; token 3: 7 + 5.9 + 1 (outcome) = 13.9 -> 5; token 2: +0.1 (below ref)
    assert rewards == pytest.approx([-0.05, 0.8, 0.1, 5.0])
    negative = step_ppo_rewards([(0, 1)], [0.0], [0.0], [-80.0], kl_coef=0.1)
    assert negative == [-5.0]  # -0.1 * 80 = -8, clipped


def test_mismatched_inputs_raise():
    with pytest.raises(ValueError, match="outside the response of 3 tokens"):
        step_ppo_rewards([(0, 5)], [1.0], [0.0] * 3, [0.0] * 3)
    with pytest.raises(ValueError, match="2 step spans for 1 step scores"):
        step_ppo_rewards([(0, 1), (1, 2)], [1.0], [0.0] * 2, [0.0] * 2)
    with pytest.raises(ValueError, match="3 policy log-probs for 2"):
        kl_penalties([0.0] * 3, [0.0] * 2, 0.1)


def test_gae_carries_step_rewards_back_with_lambda():
    # the learner's ppo_targets on one 4-token response (label positions 1..4 after a 2-token prompt)
    rewards = step_ppo_rewards([(0, 2), (2, 4)], [0.5, 1.0], [0.0] * 4, [0.0] * 4)
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0, 1.0]])
    token_rewards = torch.tensor([[0.0, *rewards]])
    values = torch.tensor([[0.0, 0.2, 0.4, 0.6, 0.8]])
    out = ppo_targets({"response_mask": mask, "token_rewards": token_rewards}, values, Objective(kind="ppo", gamma=1.0, lam=0.95))
    # deltas r_t + V_{t+1} - V_t: 0.2, 0.5 + 0.2, 0.2, 1 - 0.8; A_t = delta_t + 0.95 A_{t+1}
    a3 = 0.2
    a2 = 0.2 + 0.95 * a3
    a1 = 0.7 + 0.95 * a2
    a0 = 0.2 + 0.95 * a1
    assert out["advantages"][0, 1:].tolist() == pytest.approx([a0, a1, a2, a3])
    assert out["returns"][0, 1:].tolist() == pytest.approx([a0 + 0.2, a1 + 0.4, a2 + 0.6, a3 + 0.8])
    assert out["returns"][0, 0] == 0.0  # the prompt position takes no part
