import pytest

from cdra.rewards.elo import (
    elo_ratings,
    parse_winner,
    scale_group_rewards,
    sr_r1_advantages,
    sr_r1_format_reward,
    sr_r1_rewards,
    tag_count_reward,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("...\nWinner: response A", "A"),
        ("...\nwinner: Response b", "B"),
        ("**Winner:** Response B.", "B"),
        ("Winner: B", "B"),
        ("Winner: response A\nOn reflection...\nWinner: response B", "B"),  # last wins
        ("Winner: response A or response B", None),  # both
        ("Winner: tie", None),  # neither
        ("Winner: response A\nWinner: unclear", None),  # the last line decides
        ("Response A is better.", None),  # no Winner line
        ("", None),
    ],
)
def test_parse_winner(text, expected):
    assert parse_winner(text) == expected


def test_elo_single_match_by_hand():
    # Pass 1: E = 1/(1+10^0) = 0.5 -> +8 / -8.
    assert elo_ratings(2, [(0, 1)], passes=1) == [8.0, -8.0]
    # Pass 2: E = 1/(1+10^(-16/400)) = 0.5230096; delta = 16*(1-E) = 7.6318466.
    r = elo_ratings(2, [(0, 1)], passes=2)
    assert r[0] == pytest.approx(15.6318466, abs=1e-6)
    assert r[1] == pytest.approx(-15.6318466, abs=1e-6)
    # Zero-sum always.
    r10 = elo_ratings(2, [(0, 1)])
    assert r10[0] == pytest.approx(-r10[1]) and r10[0] > r[0]


def test_elo_sequential_order_matters():
    # 0 beats 1 (+8/-8), then 1 (-8) beats 2 (0): E = 1/(1+10^(8/400)) = 0.4884911,
    # delta = 16*(1-E) = 8.1841743.
    r = elo_ratings(3, [(0, 1), (1, 2)], passes=1)
    assert r == pytest.approx([8.0, 0.1841743, -8.1841743], abs=1e-6)
    # A then B wins back: the second update is larger (upset), 16*(1-1/(1+10^(16/400))).
    r = elo_ratings(2, [(0, 1), (1, 0)], passes=1)
    assert r == pytest.approx([-0.3681534, 0.3681534], abs=1e-6)


def test_elo_no_matches_and_bad_input():
    assert elo_ratings(3, []) == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        elo_ratings(2, [(0, 0)])
    with pytest.raises(ValueError):
        elo_ratings(2, [(0, 2)])


def test_scale_group_rewards():
    assert scale_group_rewards([8.0, -8.0, 0.0]) == [3.0, 0.0, 1.5]
    assert scale_group_rewards([5.0, 5.0, 5.0]) == [1.5, 1.5, 1.5]
    assert scale_group_rewards([0.0] * 5) == [1.5] * 5
    assert scale_group_rewards([1.0, 3.0], low=-1.0, high=1.0) == [-1.0, 1.0]
    assert scale_group_rewards([]) == []


GOOD = "<think>\nreason\n</think>\n<answer>\n42\n</answer>"


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD, 1.0),
        ("<think>\nmulti\nline\n</think>\n<answer>\n4\n2\n</answer>", 1.0),
        (GOOD + "\n", 0.0),  # whole string: nothing after </answer>
        ("x" + GOOD, 0.0),
        ("<think>reason</think><answer>42</answer>", 0.0),
        ("<think>\nreason\n</think> <answer>\n42\n</answer>", 0.0),
    ],
)
def test_sr_r1_format_reward(text, expected):
    assert sr_r1_format_reward(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD, 1.0),
        ("<think>\nreason", 0.25),
        ("<think>\nr\n</think>\n", 0.5),
        ("<think>\nr\n</think>\n<answer>\n42", 0.75),
        ("<think>\n<think>\nr\n</think>\n<answer>\n42\n</answer>", 0.75),  # duplicate tag
        ("<think>r</think><answer>42</answer>", 0.0),
        ("", 0.0),
    ],
)
def test_tag_count_reward(text, expected):
    assert tag_count_reward(text) == expected


def test_sr_r1_rewards_and_advantages():
    r = sr_r1_rewards([3.0, 0.0, 1.5], [1, 0, 1], [1, 1, 0], [1.0, 0.5, 0.25])
    assert r == [6.0, 1.5, 2.75]
    r = sr_r1_rewards([3.0], [1], [1], [1.0], weights=(0.5, 2.0, 0.0, 1.0))
    assert r == [4.5]
    with pytest.raises(ValueError):
        sr_r1_rewards([1.0, 2.0], [1], [1], [1])
    # mean 2, unbiased std 1 -> (r - 2) / (1 + 1e-4)
    a = sr_r1_advantages([1.0, 2.0, 3.0])
    assert a == pytest.approx([-1 / 1.0001, 0.0, 1 / 1.0001])
    # [0, 0, 0, 4]: mean 1, var = (1+1+1+9)/3 = 4, std 2
    assert sr_r1_advantages([0.0, 0.0, 0.0, 4.0]) == pytest.approx(
        [-1 / 2.0001, -1 / 2.0001, -1 / 2.0001, 3 / 2.0001]
    )
    assert sr_r1_advantages([1.5, 1.5]) == [0.0, 0.0]
    assert sr_r1_advantages([7.0]) == [0.0]
    assert sr_r1_advantages([]) == []
