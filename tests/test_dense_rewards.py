"""CDRA's dense step rewards and advantages against hand-computed values (pure)."""

from __future__ import annotations

import math

import pytest
import torch

from cdra.algos.advantages import per_position_group_normalize
from cdra.algos.dense import dense_step_rewards, per_step_return_advantages, spread_over_steps, step_rewards_to_go


def test_step_scores_land_on_exactly_their_tokens():
    # 6 response tokens: step 1 = tokens 0-2, step 2 = tokens 3-4, token 5 (EOS) in no step
    assert spread_over_steps([(0, 3), (3, 5)], [1.0, -1.0], 6) == [1, 1, 1, -1, -1, 0]
    # a preamble before "Step 1:" gets nothing either
    assert spread_over_steps([(2, 4)], [0.5], 5) == [0, 0, 0.5, 0.5, 0]


def test_outcome_term_moves_every_token():
    rewards = dense_step_rewards([(0, 3), (3, 5)], [1.0, -1.0], 6, outcome=1.0, outcome_weight=0.5)
    assert rewards == [1.5, 1.5, 1.5, -0.5, -0.5, 0.5]
    assert dense_step_rewards([(0, 2)], [1.0], 3, outcome=1.0) == [1.0, 1.0, 0.0]  # weight 0 by default


@pytest.mark.parametrize("spans", [[(0, 3), (2, 5)], [(3, 5), (0, 2)], [(0, 7)], [(2, 1)]])
def test_bad_spans_are_rejected(spans):
    with pytest.raises(ValueError, match="spans"):
        spread_over_steps(spans, [0.0] * len(spans), 6)


def test_rewards_to_go():
    assert step_rewards_to_go([1.0, -1.0, 0.5]) == [0.5, -0.5, 0.5]
    assert step_rewards_to_go([]) == []


def test_per_step_return_advantages_hand_values():
    # returns: A [2, 1]; B [0, -1]; C [-1]. Step 0 over {2, 0, -1}: mean 1/3, unbiased std sqrt(7/3);
    # step 1 over {1, -1}: mean 0, std sqrt(2); C has no step 1.
    adv = per_step_return_advantages([[1.0, 1.0], [1.0, -1.0], [-1.0]])
    std0, std1 = math.sqrt(7 / 3) + 1e-8, math.sqrt(2) + 1e-8  # + eps
    expected = [[(2 - 1 / 3) / std0, 1 / std1], [(0 - 1 / 3) / std0, -1 / std1], [(-1 - 1 / 3) / std0]]
    for got, want in zip(adv, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-9)
    assert per_step_return_advantages([[1.0], [1.0]]) == [[0.0], [0.0]]  # all agree
    assert per_step_return_advantages([[], []]) == [[], []]


def test_per_position_advantage_of_dense_rewards_hand_values():
    # the paper's advantage: per token position across the group of 2
    rows = [dense_step_rewards([(0, 2), (2, 3)], [1.0, 1.0], 3), dense_step_rewards([(0, 2), (2, 3)], [1.0, -1.0], 3)]
    adv = per_position_group_normalize(torch.tensor(rows), torch.ones(2, 3), group_size=2)
    # positions 0-1 agree -> 0; position 2: {1, -1}, mean 0, std sqrt(2)
    assert adv.flatten().tolist() == pytest.approx([0, 0, 1 / math.sqrt(2), 0, 0, -1 / math.sqrt(2)], abs=1e-6)
