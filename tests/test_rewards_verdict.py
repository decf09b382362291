import pytest

from cdra.rewards.verdict import (
    critique_reward,
    discrimination_reward,
    helpfulness_reward,
    parse_final_verdict,
    parse_step_verdicts,
)

CRITIQUE = """Step sentence: 3 + 4 = 7
Correctness of the step: Correct
Explanation: fine.
Step sentence: 7 * 2 = 15
Correctness of the step: Wrong
Explanation: 7 * 2 = 14.
Correctness of the final answer: Wrong"""


@pytest.mark.parametrize(
    "critique, expected",
    [
        (CRITIQUE, False),
        ("Correctness of the final answer: Correct", True),
        ("Correctness of the final answer: **Correct**.", True),
        ("correctness of the final answer: wrong", False),
        ("Correctness of the final answer: Correct Wrong", None),  # both values: ambiguous
        ("Correctness of the final answer: Correct or Wrong?", None),
        ("Correctness of the final answer: Incorrect", None),  # neither word
        ("Correctness of the final answer:", None),
        ("Correctness of the final answer: Correct\nCorrectness of the final answer: Wrong", False),
        ("Correctness of the final answer: Wrong\nCorrectness of the final answer: Correct", True),
        # The last verdict line decides even when it is ambiguous.
        ("Correctness of the final answer: Correct\nCorrectness of the final answer: unsure", None),
        # Words elsewhere on other lines do not count.
        ("Wrong reasoning.\nCorrectness of the final answer: Correct\nnot Wrong", True),
        ("The final answer is correct.", None),  # no verdict line
        ("", None),
    ],
)
def test_parse_final_verdict(critique, expected):
    assert parse_final_verdict(critique) is expected


def test_parse_step_verdicts():
    assert parse_step_verdicts(CRITIQUE) == [True, False]
    assert parse_step_verdicts("Correctness of the step: Correct Wrong\n") == [None]
    assert parse_step_verdicts("nothing") == []


@pytest.mark.parametrize(
    "verdict, orig, expected",
    [(True, True, 1.0), (False, False, 1.0), (True, False, 0.0), (False, True, 0.0),
     (None, True, 0.0), (None, False, 0.0)],
)
def test_stage1_discrimination(verdict, orig, expected):
    assert critique_reward(verdict, orig, None, "discrimination") == expected


def test_stage1_code_values():
    vals = (1.0, -1.0)
    assert discrimination_reward(True, True, vals) == 1.0
    assert discrimination_reward(None, True, vals) == -1.0
    assert critique_reward(False, True, None, "discrimination", dis_reward_values=vals) == -1.0


# transitions (original, refined): c->c, c->i, i->c, i->i
TRANSITIONS = [(True, True), (True, False), (False, True), (False, False)]


@pytest.mark.parametrize(
    "mode, table",
    [("r_refine", [1, 0, 1, 0]), ("r_delta", [0, -1, 1, 0]), ("r_correct", [0.2, 0, 1, 0])],
)
def test_rf_mode_tables(mode, table):
    assert [helpfulness_reward(o, n, mode) for o, n in TRANSITIONS] == table


def test_stage2_code_override():
    # Right verdict: r_help + 0.2; wrong or missing verdict: -1 regardless of r_help.
    assert critique_reward(True, True, True, "helpfulness") == pytest.approx(1.2)
    assert critique_reward(False, False, True, "helpfulness") == pytest.approx(1.2)
    assert critique_reward(False, False, False, "helpfulness") == pytest.approx(0.2)
    assert critique_reward(True, False, True, "helpfulness") == -1.0
    assert critique_reward(None, False, True, "helpfulness") == -1.0
    r = critique_reward(True, True, False, "helpfulness", rf_mode="r_delta")
    assert r == pytest.approx(-0.8)


def test_stage2_paper_additive():
    kw = dict(stage="helpfulness", combine="paper_additive")
    assert critique_reward(True, True, True, **kw) == pytest.approx(1.2)
    assert critique_reward(True, False, True, **kw) == pytest.approx(1.0)  # wrong verdict
    assert critique_reward(None, False, False, **kw) == pytest.approx(0.0)
    assert critique_reward(False, False, True, rf_mode="r_correct", **kw) == pytest.approx(1.2)
    assert critique_reward(True, True, True, rf_mode="r_correct", **kw) == pytest.approx(0.4)
    r = critique_reward(True, True, False, rf_mode="r_delta", dis_weight=0.5, **kw)
    assert r == pytest.approx(-0.5)
    # With the +1/-1 code values, a wrong verdict subtracts dis_weight.
    r = critique_reward(False, True, True, dis_reward_values=(1.0, -1.0), **kw)
    assert r == pytest.approx(0.8)


def test_stage2_errors():
    with pytest.raises(ValueError):
        critique_reward(True, True, None, "helpfulness")
    with pytest.raises(ValueError):
        critique_reward(True, True, True, "helpfulness", rf_mode="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        critique_reward(True, True, True, "helpfulness", combine="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        critique_reward(True, True, True, "bogus")  # type: ignore[arg-type]
