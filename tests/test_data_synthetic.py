import random

import pytest

from cdra.data import (
    ArithmeticStep,
    SyntheticConfig,
    TaskExample,
    comparison_mark_offsets,
    corrupt_steps,
    critique_text,
    format_r1_solution,
    format_steps_solution,
    judge_steps,
    make_examples,
    make_mcq_examples,
    make_problem,
    make_problems,
    parse_steps,
    split_of_question,
    step_check,
    to_example,
)
from cdra.data.synthetic import _apply


def hand_problem():
    return make_problem(3, [("+", 4), ("*", 2)], id="hand-0")


def test_hand_problem_fields():
    p = hand_problem()
    assert p.question == "Start with 3. Add 4. Multiply by 2."
    assert p.answer == "14"
    assert p.start == 3
    assert p.ops == (("+", 4), ("*", 2))
    assert p.steps == (ArithmeticStep("+", 3, 4, 7), ArithmeticStep("*", 7, 2, 14))
    assert p.steps[0].text() == "3+4=7"
    assert make_problem(9, [("-", 5)]).question == "Start with 9. Subtract 5."


def test_exact_solution_strings():
    p = hand_problem()
    assert format_steps_solution(p) == "Step 1: 3+4=7\nStep 2: 7*2=14\nThe answer is 14."
    assert format_r1_solution(p) == " Step 1: 3+4=7. Step 2: 7*2=14. </think> <answer>14</answer>"
    bad = (ArithmeticStep("+", 3, 4, 8), ArithmeticStep("*", 8, 2, 16))
    assert format_steps_solution(p, bad) == "Step 1: 3+4=8\nStep 2: 8*2=16\nThe answer is 16."
    assert format_r1_solution(p, steps=bad) == " Step 1: 3+4=8. Step 2: 8*2=16. </think> <answer>16</answer>"
    assert parse_steps(format_steps_solution(p, bad)) == bad


def test_determinism_and_seed_dependence():
    a = make_problems(200, seed=1)
    b = make_problems(200, seed=1)
    c = make_problems(200, seed=2)
    assert a == b
    assert [p.question for p in a] != [p.question for p in c]
    assert [p.id for p in a[:3]] == ["synthetic-train-0", "synthetic-train-1", "synthetic-train-2"]
    assert make_problems(50, seed=1) == a[:50]
    assert make_examples(20, 3, split="test") == make_examples(20, 3, split="test")


def test_splits_disjoint():
    train = {p.question for p in make_problems(3000, seed=0, split="train")}
    test = {p.question for s in (0, 1) for p in make_problems(500, seed=s, split="test")}
    val = {p.question for p in make_problems(200, seed=0, split="validation")}
    assert train and test and val
    assert not train & test and not train & val and not test & val
    assert all(split_of_question(q) == "train" for q in train)
    assert make_problems(5, 0, split="val") == make_problems(5, 0, split="validation")
    with pytest.raises(ValueError, match="unknown split"):
        make_problems(5, 0, split="bogus")


def test_unique_within_split():
    qs = [p.question for p in make_problems(1000, seed=4)]
    assert len(set(qs)) == len(qs)


@pytest.mark.parametrize(
    "config",
    [
        SyntheticConfig(),
        SyntheticConfig(num_steps=4, max_operand=20, max_value=50),
        SyntheticConfig(num_steps=3, ops=("-",), max_operand=20),
        SyntheticConfig(num_steps=3, ops="+*", max_value=30),
    ],
)
def test_values_in_range(config):
    for p in make_problems(300, seed=7, config=config):
        assert len(p.steps) == config.num_steps
        assert 1 <= p.start <= config.max_operand
        cur = p.start
        for (op, operand), step in zip(p.ops, p.steps):
            assert op in config.ops
            assert 1 <= operand <= config.max_operand
            assert step == ArithmeticStep(op, cur, operand, _apply(op, cur, operand))
            assert 0 <= step.value <= config.max_value
            cur = step.value
        assert p.answer == str(cur)


def test_config_validation():
    for bad in (dict(num_steps=0), dict(max_operand=0), dict(ops=("/",)), dict(ops=()), dict(max_value=0)):
        with pytest.raises(ValueError):
            SyntheticConfig(**bad)
    assert SyntheticConfig(ops="+-").ops == ("+", "-")


def test_small_space_warns_and_fills():
    config = SyntheticConfig(num_steps=1, max_operand=2, ops=("+",))
    with pytest.warns(UserWarning, match="distinct questions"):
        problems = make_problems(30, 0, config, split="train")
    assert len(problems) == 30


def test_corrupt_steps_marks_first_wrong_onward():
    config = SyntheticConfig(num_steps=4)
    rng = random.Random(0)
    seen_idx = set()
    for p in make_problems(300, seed=3, config=config):
        steps, labels = corrupt_steps(p, rng)
        assert len(steps) == len(labels) == len(p.steps)
        wrong = [i for i, s in enumerate(steps) if not s.is_arithmetic_correct()]
        assert len(wrong) == 1
        idx = wrong[0]
        seen_idx.add(idx)
        assert labels == [i < idx for i in range(len(steps))]
        assert labels == judge_steps(p, steps)
        assert steps[:idx] == p.steps[:idx]
        assert 0 < abs(steps[idx].value - p.steps[idx].value) <= 2
        for i in range(idx + 1, len(steps)):  # carried forward, computed correctly
            assert steps[i].left == steps[i - 1].value
            assert (steps[i].op, steps[i].right) == p.ops[i]
        assert all(s.value >= 0 for s in steps)
        assert str(steps[-1].value) != p.answer
    assert seen_idx == {0, 1, 2, 3}


def test_judge_steps_definition():
    p = hand_problem()
    assert judge_steps(p, p.steps) == [True, True]
    # second step recomputes the true value from a wrong input: still False (after first wrong)
    assert judge_steps(p, (ArithmeticStep("+", 3, 4, 8), ArithmeticStep("*", 7, 2, 14))) == [False, False]
    # right arithmetic on the wrong operation
    assert judge_steps(p, (ArithmeticStep("+", 3, 5, 8), ArithmeticStep("*", 8, 2, 16))) == [False, False]
    # extra step beyond the problem
    extra = p.steps + (ArithmeticStep("+", 14, 1, 15),)
    assert judge_steps(p, extra) == [True, True, False]


def test_critique_text_exact():
    p = hand_problem()
    assert critique_text(p, p.steps, [True, True]) == (
        "Step sentence: 3+4=7; recomputed 3+4=7; last digits 7 vs 7: same\n"
        "Correctness of the step: Correct\n"
        "Explanation: 3+4 is 7.\n"
        "Step sentence: 7*2=14; recomputed 7*2=14; last digits 4 vs 4: same\n"
        "Correctness of the step: Correct\n"
        "Explanation: 7*2 is 14.\n"
        "Correctness of the final answer: Correct"
    )
    bad = (ArithmeticStep("+", 3, 4, 8), ArithmeticStep("*", 8, 2, 16))
    assert critique_text(p, bad, [False, False]) == (
        "Step sentence: 3+4=8; recomputed 3+4=7; last digits 7 vs 8: DIFFERENT\n"
        "Correctness of the step: Wrong\n"
        "Explanation: 3+4 is 7, not 8.\n"
        "Step sentence: 8*2=16; recomputed 8*2=16; last digits 6 vs 6: same\n"
        "Correctness of the step: Wrong\n"
        "Explanation: 8*2 is 16, but it should be 7*2=14.\n"
        "Correctness of the final answer: Wrong"
    )
    bad2 = (ArithmeticStep("+", 3, 4, 7), ArithmeticStep("*", 7, 2, 15))
    assert critique_text(p, bad2, [True, False]).splitlines()[-2:] == [
        "Explanation: 7*2 is 14, not 15.",
        "Correctness of the final answer: Wrong",
    ]
    with pytest.raises(ValueError):
        critique_text(p, bad, [False])


def test_step_check_compares_last_digits_only():
    # a tens-digit slip is not caught: the check compares last digits (documented limit)
    assert step_check(ArithmeticStep("+", 38, 7, 35)) == "38+7=35; recomputed 38+7=45; last digits 5 vs 5: same"
    assert step_check(ArithmeticStep("-", 12, 3, 8)).endswith("last digits 9 vs 8: DIFFERENT")


def test_comparison_mark_offsets():
    p = hand_problem()
    bad = (ArithmeticStep("+", 3, 4, 8), ArithmeticStep("*", 8, 2, 16))
    text = critique_text(p, bad, [False, False])
    offsets = comparison_mark_offsets(text)
    assert [text[k : k + 4] for k in offsets] == ["DIFF", "same"]
    assert comparison_mark_offsets("Step sentence: 3+4=7\nlast digits 7 vs 7: maybe") == []


def test_to_example():
    p = hand_problem()
    ex = to_example(p)
    assert ex == TaskExample(
        id="hand-0",
        question="Start with 3. Add 4. Multiply by 2.",
        answer="14",
        solution="Step 1: 3+4=7\nStep 2: 7*2=14\nThe answer is 14.",
        source="synthetic",
        kind="gsm8k",
    )
    assert to_example(p, solution_format="r1").solution == format_r1_solution(p)


def test_mcq_examples():
    problems = make_problems(200, seed=5, split="test")
    mcq = make_mcq_examples(200, seed=5, split="test", num_choices=5)
    assert mcq == make_mcq_examples(200, seed=5, split="test", num_choices=5)
    letters_used = set()
    for p, ex in zip(problems, mcq):
        assert ex.kind == "mcq" and ex.source == "synthetic_mcq"
        assert len(ex.choices) == 5 and len(set(ex.choices)) == 5
        assert all(int(c) >= 0 for c in ex.choices)
        gold_index = "ABCDE".index(ex.answer)
        assert ex.choices[gold_index] == p.answer
        options = " ".join(f"({'ABCDE'[i]}) {c}" for i, c in enumerate(ex.choices))
        assert ex.question == f"{p.question} Options: {options}"
        assert ex.solution.endswith(f"The answer is {ex.answer}.")
        letters_used.add(ex.answer)
    assert letters_used == set("ABCDE")
    assert len(make_mcq_examples(3, 0, num_choices=10)[0].choices) == 10
    with pytest.raises(ValueError):
        make_mcq_examples(3, 0, num_choices=11)
