"""solution_score and best-of-N selection on hand values (pure)."""

import math
import random

import pytest

from cdra.algos.prm_scores import oracle_correct, pick_by_score, pick_majority, pick_random, solution_score


@pytest.mark.parametrize("how,expected", [("product", 0.9 * 0.5 * 0.8), ("min", 0.5), ("sum", 2.2), ("last", 0.8)])
def test_solution_score_reductions(how, expected):
    assert solution_score([0.9, 0.5, 0.8], how) == pytest.approx(expected)


def test_solution_score_default_is_product_and_empty_is_zero():
    assert solution_score([0.5, 0.5]) == pytest.approx(0.25)
    assert solution_score([], "min") == 0.0
    with pytest.raises(ValueError, match="product, min, sum or last"):
        solution_score([0.5], "mean")


def test_product_and_min_rank_differently():
    a, b = [0.9, 0.9, 0.9], [0.8, 1.0, 1.0]  # product: a 0.729 < b 0.8; min: a 0.9 > b 0.8
    assert solution_score(a) < solution_score(b)
    assert solution_score(a, "min") > solution_score(b, "min")
    assert math.isclose(solution_score(a), 0.729)


def test_pick_by_score_first_of_ties():
    assert pick_by_score([0.2, 0.7, 0.7, 0.1]) == 1
    assert pick_by_score([0.3]) == 0
    with pytest.raises(ValueError):
        pick_by_score([])


def test_pick_majority():
    assert pick_majority(["5", "7", "7", None, "5", "7"]) == 1  # "7" has three votes
    assert pick_majority(["5", "7", "7", "5"]) == 0  # tie: the answer seen first
    assert pick_majority([None, None, "3"]) == 2  # None never wins a vote
    assert pick_majority([None, None]) == 0


def test_pick_random_seeded():
    picks = [pick_random(16, random.Random(7)) for _ in range(3)]
    assert len(set(picks)) == 1 and 0 <= picks[0] < 16
    rng = random.Random(0)
    assert {pick_random(3, rng) for _ in range(60)} == {0, 1, 2}


def test_oracle():
    assert oracle_correct([False, True, False])
    assert not oracle_correct([False, False])
