"""The refining actor's SFT data: the refined answer follows the critique's final verdict."""

from __future__ import annotations

import random

import pytest

from cdra.data.synthetic import make_problem, make_problems
from cdra.models.refiner import RefinerConfig, refinement_example, refiner_examples
from cdra.rewards import extract_gsm8k_answer, parse_final_verdict

PROBLEM = make_problem(3, [("+", 4), ("*", 2)])  # 3+4=7, 7*2=14


def _attempt_answer(prompt: str) -> str | None:
    attempt = prompt.split("\nA: ", 1)[1].split("\nCritique: ", 1)[0]
    return extract_gsm8k_answer(attempt)


@pytest.mark.parametrize("attempt_correct", [True, False])
@pytest.mark.parametrize("verdict_right", [True, False])
def test_target_follows_the_verdict(attempt_correct, verdict_right):
    e = refinement_example(PROBLEM, random.Random(3), attempt_correct, verdict_right)
    assert e.prompt.startswith("Q: Start with 3. Add 4. Multiply by 2.\nA: Step 1: ")
    assert e.prompt.endswith("\nRevised A:") and e.target.startswith(" Step 1: ")
    critique = e.prompt.split("\nCritique: ", 1)[1]
    says_correct = parse_final_verdict(critique)
    assert says_correct == (attempt_correct == verdict_right)
    assert (_attempt_answer(e.prompt) == "14") == attempt_correct
    refined = extract_gsm8k_answer(e.target)
    if says_correct:
        assert e.target == " " + e.prompt.split("\nA: ", 1)[1].split("\nCritique: ", 1)[0]  # kept as is
    else:
        assert (refined == "14") == (not attempt_correct)  # "fixed": right iff the attempt was wrong


def test_mixture_fractions():
    problems = make_problems(400, 0, split="train")
    examples = refiner_examples(problems, RefinerConfig(refine_fraction=0.5, flipped_verdict_fraction=0.25))
    refine = [e for e in examples if e.prompt.endswith("Revised A:")]
    assert 150 < len(refine) < 250
    first = [e for e in examples if not e.prompt.endswith("Revised A:")]
    assert all(e.prompt.endswith("\nA:") for e in first)
    flipped = [e for e in refine if parse_final_verdict(e.prompt.split("\nCritique: ", 1)[1]) != e.original_correct]
    assert 0.15 < len(flipped) / len(refine) < 0.35
    with pytest.raises(ValueError, match="refine_fraction"):
        RefinerConfig(refine_fraction=1.5)
