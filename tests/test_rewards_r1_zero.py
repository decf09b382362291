import pytest

from cdra.rewards.grading import grading_stats
from cdra.rewards.r1_zero import r1_zero_answer, r1_zero_reward_fn

ONE = {"format_reward": 1.0, "answer_reward": 1.0, "reward": 1.0}
FMT = {"format_reward": 1.0, "answer_reward": 0.0, "reward": 0.0}
ZERO = {"format_reward": 0.0, "answer_reward": 0.0, "reward": 0.0}


@pytest.mark.parametrize(
    "response, gt, expected",
    [
        ("2+3=5 </think> <answer>5</answer>", "5", ONE),
        ("2+3=5 </think> <answer>6</answer>", "5", FMT),  # format alone earns 0 reward
        ("2+3=5 </think>  <answer>5</answer>", "5", ZERO),  # two spaces
        ("2+3=5 </think>\n<answer>5</answer>", "5", ZERO),  # newline
        ("2+3=5 </think><answer>5</answer>", "5", ZERO),  # no space
        ("2+3=5 </think> <answer>5", "5", ZERO),  # no </answer>
        ("</think> <answer>1,234</answer>", "1234", ONE),
        ("</think> <answer>5.</answer>", 5, ONE),  # int ground truth
        ("</think> <answer>x</answer> <answer>7</answer>", "7", ONE),  # last <answer>
        ("</think> <answer>7</answer> trailing 9", "7", ONE),  # up to </answer>
        ("</think> <answer>so $\\boxed{\\frac{1}{2}}$</answer>", "\\frac{1}{2}", ONE),
        ("</think> <answer>\\boxed{\\frac{1}{2}</answer>", "\\frac{1}{2}", FMT),  # unbalanced
        ("</think> <answer>B</answer>", ["A", "b"], ONE),  # any of a list
        ("</think> <answer>C</answer>", ["A", "B"], FMT),
    ],
)
def test_r1_zero_reward_fn(response, gt, expected):
    assert r1_zero_reward_fn(response, gt) == expected


@pytest.mark.timeout(60)
def test_r1_zero_symbolic_answer():
    r = r1_zero_reward_fn("</think> <answer>$\\boxed{0.5}$</answer>", "\\frac{1}{2}")
    assert r == ONE
    # fast=True does not run math-verify: the same answer is not recognized.
    assert r1_zero_reward_fn("</think> <answer>0.5</answer>", "\\frac{1}{2}", fast=True) == FMT


@pytest.mark.timeout(60)
def test_r1_zero_adversarial_box_is_bounded():
    before = grading_stats()
    resp = "</think> <answer>\\boxed{" + "{" * 5000 + "</answer>"
    assert r1_zero_reward_fn(resp, "5") == FMT
    # The unbalanced box is rejected by extraction, before any grading.
    assert grading_stats().calls == before.calls


def test_r1_zero_answer():
    assert r1_zero_answer("a </think> <answer> 42 </answer>") == "42"
    assert r1_zero_answer("a </think> <answer>\\fbox{3}</answer>") == "3"
    assert r1_zero_answer("no format") is None


@pytest.mark.parametrize("answer", ["42, 41", "42 or 41", "41 or 42", "\\boxed{42} \\boxed{41}", "not 42", "42; 41",
                                    "42 \\text{ or } 41"])
def test_r1_zero_hedged_answers_earn_nothing_unless_lenient(answer):
    response = f"</think> <answer>{answer}</answer>"
    assert r1_zero_reward_fn(response, "42") == FMT


def test_r1_zero_lenient_grades_the_last_box_as_upstream():
    response = "</think> <answer>\\boxed{41} \\boxed{42}</answer>"
    assert r1_zero_reward_fn(response, "42") == FMT
    assert r1_zero_reward_fn(response, "42", strict=False) == ONE


@pytest.mark.parametrize("answer, gold", [("42", "42"), ("1,234", "1234"), ("\\boxed{42} so \\boxed{42}", "42"), ("(3, 4)", "(3,4)"),
                                          ("1, 2", "1,2")])
def test_r1_zero_single_answers_still_count(answer, gold):
    assert r1_zero_reward_fn(f"</think> <answer>{answer}</answer>", gold) == ONE
