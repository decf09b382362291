import pytest

from cdra.rewards.grading import (
    fast_grade,
    grade_answer,
    grading_stats,
    reset_grading_stats,
)


def _delta(before, after):
    return {k: getattr(after, k) - getattr(before, k) for k in before.as_dict()}


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("1,234", "1234", True),
        ("$1,234.00", "1234", True),
        ("14.0", "14", True),
        ("5.", "5", True),
        ("5", "6", False),
        ("-3", "3", False),
        ("c", "C", True),
        ("(C)", "C", True),
        ("\\text{(C)}", "(C)", True),
        ("B", "C", False),
        ("e", "E", True),
        ("E", "e", None),  # lower-case gold is math (Euler's e), not an option letter
        ("12", "C", False),  # gold is a letter: only letters match
        ("", "5", False),
        ("5", "", False),
        ("\\dfrac{1}{2}", "\\frac{1}{2}", True),
        ("5\\text{ cm}", "5", True),
        ("\\frac{1}{2}", "0.5", None),  # undecided: needs math-verify
        ("3.14159", "3.1416", None),  # decimals: math-verify rounds
    ],
)
def test_fast_grade(pred, gold, expected):
    assert fast_grade(pred, gold) is expected


def test_fast_path_does_not_use_math_verify():
    before = grading_stats()
    assert grade_answer("1,234", "1234") is True
    assert grade_answer("7", "8") is False
    assert grade_answer("b", "B") is True
    d = _delta(before, grading_stats())
    assert d["calls"] == 3 and d["fast_path"] == 3 and d["math_verify"] == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("\\frac{1}{2}", "0.5", True),
        ("\\frac12", "\\frac{1}{2}", True),
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True),
        ("x^2+1", "1+x^2", True),
        ("\\frac{6}{2}", "3", True),
        ("2\\pi", "\\pi \\cdot 2", True),
        ("\\frac{1}{3}", "0.5", False),
        ("x^2", "x^3", False),
        ("\\{1,2\\}", "\\{2,1\\}", True),
    ],
)
def test_math_verify_path(pred, gold, expected):
    before = grading_stats()
    assert grade_answer(pred, gold) is expected
    d = _delta(before, grading_stats())
    assert d["math_verify"] == 1 and d["errors"] == 0


def test_fast_flag_skips_math_verify():
    before = grading_stats()
    assert grade_answer("\\frac{1}{2}", "0.5", fast=True) is False
    assert _delta(before, grading_stats())["math_verify"] == 0


def test_stats_snapshot_and_reset():
    grade_answer("1", "1")
    snap = grading_stats()
    grade_answer("1", "1")
    assert grading_stats().calls == snap.calls + 1  # the snapshot did not move
    reset_grading_stats()
    s = grading_stats()
    assert (s.calls, s.errors, s.fast_path, s.math_verify) == (0, 0, 0, 0)


def test_model_output_is_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    assert grade_answer(payload, "0") is False
    assert grade_answer("\\boxed{" + payload + "}", "0") is False
    assert not marker.exists()
