import math

import pytest

from cdra.rewards.prm import mean_yes_probability, parse_prm_score, yes_probability


@pytest.mark.parametrize(
    "text, expected",
    [
        ("**Reasoning:** ok.\n**SCORE:** 0.8", 0.8),
        ("**SCORE:** -0.5", -0.5),
        ("**SCORE:** 1", 1.0),
        ("**SCORE:** 3", 1.0),  # clamped
        ("**SCORE:** -7.5", -1.0),
        ("**SCORE:** .25", 0.25),
        ("SCORE: 0.1", 0.1),
        ("**SCORE**: 0.3", 0.3),
        ("**SCORE:** 0.2 then **SCORE:** -0.4", -0.4),  # last wins
        ("**SCORE:** 0.2 then **SCORE:** N/A", None),  # the last label decides
        ("**Reasoning:** no score", None),
        ("", None),
    ],
)
def test_parse_prm_score(text, expected):
    got = parse_prm_score(text)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_yes_probability():
    assert yes_probability(math.log(0.6), math.log(0.2)) == pytest.approx(0.75)
    assert yes_probability(-1.0, -1.0) == pytest.approx(0.5)
    assert yes_probability(-0.1, None) == 1.0
    assert yes_probability(None, -0.1) == 0.0
    assert yes_probability(None, None) == 0.5
    assert yes_probability(-math.inf, -math.inf) == 0.5
    # Stable for extreme logprobs.
    assert yes_probability(-1000.0, -1.0) == pytest.approx(0.0, abs=1e-300)
    assert yes_probability(-1.0, -1000.0) == pytest.approx(1.0)


def test_mean_yes_probability():
    pairs = [(math.log(0.6), math.log(0.2)), (None, -1.0), (-2.0, None)]
    assert mean_yes_probability(pairs) == pytest.approx((0.75 + 0.0 + 1.0) / 3)
    assert mean_yes_probability([]) == 0.5
