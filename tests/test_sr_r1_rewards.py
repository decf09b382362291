"""SR-R1's pure pieces: per-group Elo rewards from pair verdicts, the seeded coin, the answer
term, the pair-judge prompt and the zoo's sr_r1 training items (ALGORITHMS.md section 3)."""

from __future__ import annotations

import random

import pytest

from cdra.data.prompts import render_pair_judge
from cdra.data.synthetic import corrupt_steps, format_sr_r1_solution, make_problem
from cdra.models.zoo import data as zd
from cdra.rewards import parse_winner
from cdra.rewards.elo import (
    group_elo_rewards,
    pair_winner,
    shows_first,
    sr_r1_accuracy,
    sr_r1_answer,
    sr_r1_format_reward,
    tag_count_reward,
)

PROBLEM = make_problem(3, [("+", 4), ("*", 2)])  # 3+4=7, 7*2=14


def test_group_with_no_verdicts_is_all_equal():
    assert group_elo_rewards(4, {}) == ([1.5] * 4, 0)
    every_pair_unparsed = {(i, j): None for i in range(3) for j in range(i + 1, 3)}
    assert group_elo_rewards(3, every_pair_unparsed) == ([1.5, 1.5, 1.5], 3)


def test_one_match_scales_to_the_ends_and_the_bystander_to_the_middle():
    # 0 beats 1: ratings (+x, -x, 0) after any number of passes -> 3, 0, 1.5
    rewards, dropped = group_elo_rewards(3, {(0, 1): 0, (0, 2): None, (1, 2): None})
    assert rewards == pytest.approx([3.0, 0.0, 1.5]) and dropped == 2
    # the loser shown as either letter: the same match
    assert group_elo_rewards(2, {(0, 1): 1})[0] == [0.0, 3.0]


def test_two_matches_one_pass_by_hand():
    # (0 beats 1) then (1 beats 2): ratings 8, 0.1841743, -8.1841743 (see test_rewards_elo);
    # scaled: 3, 3 * 8.3683486 / 16.1841743, 0
    rewards, _ = group_elo_rewards(3, {(1, 2): 1, (0, 1): 0}, passes=1)  # played in pair order whatever the dict's
    assert rewards == pytest.approx([3.0, 1.5512096, 0.0], abs=1e-6)


def test_dropped_verdicts_are_the_same_as_absent_matches():
    full = {(0, 1): 0, (0, 2): 2, (1, 2): 1, (0, 3): 0, (1, 3): 3, (2, 3): 2}
    partly = {**full, (0, 2): None, (1, 3): None}
    kept = {k: v for k, v in partly.items() if v is not None}
    assert group_elo_rewards(4, partly) == (group_elo_rewards(4, kept)[0], 2)
    assert group_elo_rewards(4, partly)[0] != group_elo_rewards(4, full)[0]
    with pytest.raises(ValueError):
        group_elo_rewards(3, {(0, 1): 2})


def test_pair_winner_undoes_the_coin():
    assert pair_winner("A", 0, 1, i_first=True) == 0
    assert pair_winner("A", 0, 1, i_first=False) == 1
    assert pair_winner("B", 0, 1, i_first=True) == 1
    assert pair_winner("B", 0, 1, i_first=False) == 0
    assert pair_winner(None, 0, 1, i_first=True) is None


def test_coin_is_reproducible_and_balanced():
    draws = [shows_first(7, g, i, j) for g in range(200) for i in range(5) for j in range(i + 1, 5)]
    assert draws == [shows_first(7, g, i, j) for g in range(200) for i in range(5) for j in range(i + 1, 5)]
    assert 0.46 < sum(draws) / len(draws) < 0.54  # 2000 draws: 4 sigma is 0.045
    other_seed = [shows_first(8, g, i, j) for g in range(200) for i in range(5) for j in range(i + 1, 5)]
    assert 0.4 < sum(a == b for a, b in zip(draws, other_seed)) / len(draws) < 0.6  # the seed reshuffles


def test_answer_term():
    good = format_sr_r1_solution(PROBLEM)
    assert good == "<think>\nStep 1: 3+4=7.\nStep 2: 7*2=14.\n</think>\n<answer>\n14\n</answer>"
    assert sr_r1_answer(good) == "14"
    assert sr_r1_accuracy(good, "14") == {"reward": 1.0, "answer_reward": 1.0, "format_reward": 1.0}
    assert sr_r1_accuracy(good, "15")["reward"] == 0.0
    untagged = format_sr_r1_solution(PROBLEM, tagged=False)
    assert untagged.endswith("</think>\nThe answer is 14.") and sr_r1_answer(untagged) is None
    assert sr_r1_accuracy(untagged, "14") == {"reward": 0.0, "answer_reward": 0.0, "format_reward": 0.0}
    assert tag_count_reward(untagged) == 0.5 and sr_r1_format_reward(good) == 1.0


def test_pair_judge_prompt_flattens_the_responses():
    prompt = render_pair_judge("sr_r1_judge_solve", "Start with 3.", "<think>\nx\n</think>", "y\n\nz")
    assert prompt == "Q: Start with 3.\nA: <think> x </think>\nB: y z\nJudge:"
    rubric = render_pair_judge("sr_r1_judge", "Q?", "a", "b")
    for criterion in ("Correctness", "Completeness", "Explanation", "Notation", "Quality", "Relevance"):
        assert criterion in rubric
    assert rubric.rstrip().endswith("Evaluation:")


def test_zoo_sr_r1_items_by_hand():
    answer = zd.sr_r1_answer_item(PROBLEM)
    assert answer.prompt == "User: Start with 3. Add 4. Multiply by 2.\nAssistant: "
    assert answer.target == format_sr_r1_solution(PROBLEM) and answer.label is None
    slip = format_sr_r1_solution(PROBLEM, corrupt_steps(PROBLEM, random.Random(0))[0])
    target = zd.pair_judgement_text(PROBLEM, slip, format_sr_r1_solution(PROBLEM), "B")
    assert target == f" Step 1: 3+4=7. Step 2: 7*2=14. Answer 14. A: {sr_r1_answer(slip)} wrong. B: 14 right.\nWinner: response B"
    assert parse_winner(target) == "B"
    items = zd.training_items("sr_r1", [PROBLEM] * 400, seed=3)
    judged = [i for i in items if i.label is not None]
    assert 0.4 < len(judged) / len(items) < 0.6
    assert 0.4 < sum(i.label for i in judged) / len(judged) < 0.6  # the right one first half of the time
    for item in judged:
        # weighted: the first letters of the two marks, in order, and the verdict letter
        assert [item.target[k] for k in item.emphasis] == (["r", "w", "A"] if item.label else ["w", "r", "B"])
        assert parse_winner(item.target) == ("A" if item.label else "B")
    held = zd.heldout_items("sr_r1", [PROBLEM] * 8)
    metrics = zd.heldout_metrics("sr_r1", held, [i.target for i in held])
    assert metrics["accuracy"] == metrics["judge_agreement"] == 1.0 and metrics["num_pairs"] == 4.0
    flipped = [("Winner: response B" if i.label else "Winner: response A") if i.label is not None else i.target for i in held]
    assert zd.heldout_metrics("sr_r1", held, flipped)["judge_agreement"] == 0.0
