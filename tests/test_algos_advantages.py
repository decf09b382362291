import math

import pytest
import torch

from cdra.algos import gae, per_position_group_normalize, reward_to_go, rloo_advantages


def test_rloo_hand_values():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 3.0])
    # group 1: 1 - (0+0+1)/3 = 2/3, 0 - 2/3 = -2/3, ...; group 2: 0 - 1 = -1 (x3), 3 - 0 = 3
    expected = torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3, -1.0, -1.0, -1.0, 3.0])
    torch.testing.assert_close(rloo_advantages(rewards, group_size=4), expected)


def test_rloo_edge_cases():
    assert torch.equal(rloo_advantages(torch.tensor([1.0, 5.0]), group_size=1), torch.zeros(2))
    assert torch.equal(rloo_advantages(torch.full((4,), 0.3), group_size=2), torch.zeros(4))
    # k/(k-1) * (r - mean)
    r = torch.randn(12)
    grouped = r.reshape(-1, 3)
    expected = (1.5 * (grouped - grouped.mean(1, keepdim=True))).reshape(-1)
    torch.testing.assert_close(rloo_advantages(r, 3), expected)
    with pytest.raises(ValueError):
        rloo_advantages(torch.ones(5), 2)


def test_gae_hand_values():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    mask = torch.ones(1, 3)
    # gamma 1, lam 0.5: t2 delta = 1 - 0.7 = 0.3 -> A 0.3
    # t1 delta = 0.7 - 0.6 = 0.1 -> A 0.1 + 0.5*0.3 = 0.25; t0 delta 0.1 -> A 0.1 + 0.5*0.25 = 0.225
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    torch.testing.assert_close(adv, torch.tensor([[0.225, 0.25, 0.3]]))
    torch.testing.assert_close(ret, torch.tensor([[0.725, 0.85, 1.0]]))

    # gamma 0.9 lam 0.95: t1 delta = 2 - 1 = 1 -> A 1; t0 delta = 1 + 0.9*1 - 0.5 = 1.4 -> 1.4 + 0.855
    adv, _ = gae(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 1.0]]), torch.ones(1, 2), gamma=0.9, lam=0.95)
    torch.testing.assert_close(adv, torch.tensor([[2.255, 1.0]]))


def test_gae_padding_is_terminal_and_ignored():
    mask = torch.tensor([[1, 1, 0]])
    # value after the last valid position is 0: A1 = 1 - 0.5; A0 = (0 + 0.5 - 0.5) + A1 = 0.5
    for pad_r, pad_v in ((5.0, 9.0), (-1e4, float("nan"))):
        adv, ret = gae(torch.tensor([[0.0, 1.0, pad_r]]), torch.tensor([[0.5, 0.5, pad_v]]), mask, 1.0, 1.0)
        torch.testing.assert_close(adv, torch.tensor([[0.5, 0.5, 0.0]]))
        torch.testing.assert_close(ret, torch.tensor([[1.0, 1.0, 0.0]]))


def test_gae_skips_holes_and_left_padding():
    # hole at t1: t2 A = 2; t0 delta = 1 + 0.5 * V2(0) - 0 = 1 -> A = 1 + 0.5 * 1 * 2 = 2
    adv, _ = gae(torch.tensor([[1.0, 100.0, 2.0]]), torch.tensor([[0.0, 50.0, 0.0]]), torch.tensor([[1, 0, 1]]), 0.5, 1.0)
    torch.testing.assert_close(adv, torch.tensor([[2.0, 0.0, 2.0]]))
    # left padding gives the same as the unpadded row
    r, v = torch.tensor([[0.3, -0.2, 1.0]]), torch.tensor([[0.1, 0.4, 0.2]])
    adv_plain, _ = gae(r, v, torch.ones(1, 3), 0.99, 0.9)
    adv_left, _ = gae(torch.cat([torch.tensor([[7.0]]), r], 1), torch.cat([torch.tensor([[7.0]]), v], 1),
                      torch.tensor([[0, 1, 1, 1]]), 0.99, 0.9)
    torch.testing.assert_close(adv_left[:, 1:], adv_plain)
    assert adv_left[0, 0].item() == 0.0


def test_gae_gamma1_lam1_is_reward_to_go_minus_value():
    torch.manual_seed(0)
    rewards, values = torch.randn(4, 6), torch.randn(4, 6)
    mask = torch.ones(4, 6)
    mask[1, 4:] = 0
    mask[2, 1:] = 0
    mask[3] = 0
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    rtg = reward_to_go(rewards, mask)
    torch.testing.assert_close(adv, (rtg - values) * mask)
    torch.testing.assert_close(ret, rtg)


def test_reward_to_go_hand_values():
    r = torch.tensor([[1.0, 2.0, 3.0, 99.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    torch.testing.assert_close(reward_to_go(r, mask), torch.tensor([[6.0, 5.0, 3.0, 0.0]]))
    # gamma 0.5: 3; 2 + 1.5 = 3.5; 1 + 0.5 * 3.5 = 2.75
    torch.testing.assert_close(reward_to_go(r, mask, gamma=0.5), torch.tensor([[2.75, 3.5, 3.0, 0.0]]))


def test_per_position_group_normalize_hand_values():
    rewards = torch.tensor(
        [
            [1.0, 2.0, 3.0],
            [3.0, 4.0, 9.0],
            [5.0, 6.0, 9.0],
            # second group: all equal where valid
            [0.5, 0.5, 0.5],
            [0.5, 0.5, 0.5],
            [0.5, 0.5, 0.5],
        ]
    )
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 1], [0, 0, 0]])
    out = per_position_group_normalize(rewards, mask, group_size=3)
    # pos 0: 1, 3, 5 -> mean 3, unbiased std sqrt(8/2) = 2 -> -1, 0, 1
    # pos 1: 2, 4 (row 2 invalid) -> mean 3, std sqrt(2) -> -1/sqrt2, 1/sqrt2
    # pos 2: valid for row 0 only -> 0
    s = 1 / math.sqrt(2)
    expected = torch.tensor(
        [[-1.0, -s, 0.0], [0.0, s, 0.0], [1.0, 0.0, 0.0], [0.0] * 3, [0.0] * 3, [0.0] * 3]
    )
    torch.testing.assert_close(out, expected)


def test_per_position_group_normalize_edge_cases():
    r = torch.randn(4, 5)
    mask = torch.ones(4, 5)
    assert torch.equal(per_position_group_normalize(r, mask, group_size=1), torch.zeros(4, 5))
    # padding values never matter
    mask[1, 3:] = 0
    poisoned = r.clone()
    poisoned[1, 3:] = float("nan")
    out = per_position_group_normalize(poisoned, mask, group_size=2)
    torch.testing.assert_close(out, per_position_group_normalize(r, mask, group_size=2))
    assert torch.isfinite(out).all()
    # full positions of a group of 2: +-1/sqrt(2) (unbiased std of two values = |a-b|/sqrt2)
    torch.testing.assert_close(out[2].abs(), torch.full((5,), 1 / math.sqrt(2)), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        per_position_group_normalize(r, mask, group_size=3)
