"""The zoo checkpoints' training and held-out items, their scoring and the recipes' digests (pure)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from cdra.data.prompts import render_step_judge
from cdra.data.synthetic import (
    ArithmeticStep,
    SyntheticConfig,
    judge_steps,
    judgement_key_offsets,
    make_problem,
    make_problems,
    problem_from_question,
    process_correct,
    step_judgement_text,
    step_locally_correct,
)
from cdra.models import zoo
from cdra.models.zoo import RECIPES, ZooRecipe
from cdra.models.zoo import data as zd
from cdra.rewards import extract_gsm8k_answer, parse_final_verdict, parse_prm_score
from cdra.runtime.learner import LearnerConfig, lr_factor

PROBLEM = make_problem(3, [("+", 4), ("*", 2)])  # 3+4=7, 7*2=14


def test_items_hand_written():
    r1 = zd.r1_item(PROBLEM)
    assert r1.prompt == "User: Start with 3. Add 4. Multiply by 2.\nAssistant: <think>"
    assert r1.target == " Step 1: 3+4=7. Step 2: 7*2=14. </think> <answer>14</answer>"
    assert zd.r1_item(PROBLEM, tagged=False).target == " Step 1: 3+4=7. Step 2: 7*2=14. </think> The answer is 14."
    steps = zd.steps_item(PROBLEM)
    assert steps.prompt == "Q: Start with 3. Add 4. Multiply by 2.\nA:"
    assert steps.target == " Step 1: 3+4=7\nStep 2: 7*2=14\nThe answer is 14."
    critic = zd.critic_item(PROBLEM, corrupt=False, rng=random.Random(0))
    assert critic.label is True
    assert critic.prompt == "Q: Start with 3. Add 4. Multiply by 2.\nA: Step 1: 3+4=7\nStep 2: 7*2=14\nThe answer is 14.\nCritique:"
    assert critic.target.startswith(" Step sentence: 3+4=7; recomputed 3+4=7; last digits 7 vs 7: same\nCorrectness of the step: Correct\n")
    assert critic.target.endswith("Correctness of the final answer: Correct")
    # the recomputed values' digits and the comparison outcomes
    assert [critic.target[k] for k in critic.emphasis] == ["7", "s", "1", "4", "s"]


def test_corrupted_critic_item_is_labelled_wrong_and_marks_the_difference():
    item = zd.critic_item(PROBLEM, corrupt=True, rng=random.Random(1))
    assert item.label is False and "The answer is 14." not in item.prompt
    assert item.target.endswith("Correctness of the final answer: Wrong")
    assert [item.target[k] for k in item.emphasis] == ["7", "D", "1", "0", "s"]  # 7 (not 5): DIFFERENT; 10: same


def test_heldout_critic_items_alternate_correct_and_corrupted():
    problems = make_problems(5, 0, SyntheticConfig(), "test")
    items = zd.heldout_items("critic", problems)
    assert [i.label for i in items] == [True, False, True, False, True]
    assert zd.heldout_items("critic", problems) == items  # deterministic


def test_score_and_metrics():
    r1 = zd.r1_item(PROBLEM)
    assert zd.score("r1", r1, " Step 1: 3+4=7. </think> <answer>14</answer> <answer>9</answer>") == (1.0, 1.0)
    assert zd.score("r1", r1, " </think> <answer>13</answer>") == (0.0, 1.0)
    assert zd.score("r1", r1, " Step 1: 3+4=7. <answer>14</answer>") == (0.0, 0.0)
    assert zd.score("r1", r1, zd.r1_item(PROBLEM, tagged=False).target) == (0.0, 0.0)  # right answer, unrewarded form
    steps = zd.steps_item(PROBLEM)
    assert zd.score("steps", steps, " Step 1: 3+4=7\nThe answer is 14.") == (1.0, 1.0)
    assert zd.score("steps", steps, " Step 1: 3+4=8") == (0.0, 0.0)
    wrong = zd.critic_item(PROBLEM, corrupt=True, rng=random.Random(0))
    right = zd.critic_item(PROBLEM, corrupt=False, rng=random.Random(0))
    assert zd.score("critic", wrong, "Correctness of the final answer: Wrong") == (1.0, 1.0)
    assert zd.score("critic", wrong, "Correctness of the step: Wrong") == (0.0, 0.0)
    metrics = zd.heldout_metrics("critic", [wrong, right, right], ["Correctness of the final answer: Wrong"] * 3)
    assert metrics == {"accuracy": pytest.approx(1 / 3), "format_rate": 1.0, "num_problems": 3.0,
                       "acc_on_correct": 0.0, "acc_on_wrong": 1.0}


@pytest.mark.parametrize("attempt_correct", [True, False])
@pytest.mark.parametrize("verdict_right", [True, False])
def test_refinement_target_follows_the_verdict(attempt_correct, verdict_right):
    item = zd.refinement_item(PROBLEM, random.Random(3), attempt_correct, verdict_right)
    assert item.prompt.startswith("Q: Start with 3. Add 4. Multiply by 2.\nA: Step 1: ")
    assert item.prompt.endswith("\nRevised A:") and item.target.startswith(" Step 1: ")
    attempt = item.prompt.split("\nA: ", 1)[1].split("\nCritique: ", 1)[0]
    says_correct = parse_final_verdict(item.prompt.split("\nCritique: ", 1)[1])
    assert says_correct == (attempt_correct == verdict_right)
    assert (extract_gsm8k_answer(attempt) == "14") == attempt_correct
    if says_correct:
        assert item.target == " " + attempt  # kept as is
    else:
        assert (extract_gsm8k_answer(item.target) == "14") == (not attempt_correct)  # "fixed": right iff it was wrong


def test_training_mixtures_follow_their_fractions():
    problems = make_problems(400, 0, split="train")
    r1 = zd.training_items("r1", problems, 0, untagged_fraction=0.3)
    assert 0.22 < sum("<answer>" not in i.target for i in r1) / 400 < 0.38
    assert all("<answer>" in i.target for i in zd.training_items("r1", problems[:50], 0, untagged_fraction=0.0))
    critic = zd.training_items("critic", problems, 0)
    assert 0.4 < sum(not i.label for i in critic) / 400 < 0.6
    refiner = zd.training_items("refiner", problems, 0, refine_fraction=0.5, flipped_verdict_fraction=0.25)
    refine = [i for i in refiner if i.prompt.endswith("Revised A:")]
    assert 150 < len(refine) < 250
    assert all(i.prompt.endswith("\nA:") for i in refiner if i not in refine)
    flipped = [i for i in refine if parse_final_verdict(i.prompt.split("\nCritique: ", 1)[1]) != i.label]
    assert 0.15 < len(flipped) / len(refine) < 0.35
    assert zd.training_items("critic", problems[:20], 0) == critic[:20]  # seeded


def test_refinement_prompts_force_the_verdict():
    attempt = " Step 1: 3+4=7\nStep 2: 7*2=15\nThe answer is 15."
    kept, correct, wrong = (zd.refinement_prompts([PROBLEM], [attempt], v)[0] for v in (None, True, False))
    assert parse_final_verdict(kept.split("\nCritique: ", 1)[1]) is False  # the reference critique sees the error
    assert parse_final_verdict(correct.split("\nCritique: ", 1)[1]) is True
    assert parse_final_verdict(wrong.split("\nCritique: ", 1)[1]) is False
    assert zd.answer_accuracy([PROBLEM, PROBLEM], [attempt, "The answer is 14."]) == 0.5


def test_recipes_digests_and_validation():
    assert list(RECIPES) == ["r1", "steps", "critic", "refiner", "genprm", "sr_r1"]
    digests = {r.digest() for r in RECIPES.values()}
    assert len(digests) == 6
    r1 = RECIPES["r1"]
    assert r1.digest() == dataclasses.replace(r1).digest()
    assert r1.digest() != dataclasses.replace(r1, steps=r1.steps + 1).digest()
    with pytest.raises(ValueError, match="task"):
        ZooRecipe(name="x", task="policy")
    with pytest.raises(ValueError, match="init"):
        ZooRecipe(name="x", task="r1", init="nothing")
    with pytest.raises(ValueError, match="unknown zoo checkpoint"):
        zoo.checkpoint_path("nothing")


def test_digest_follows_the_target_format_and_the_base(monkeypatch):
    """A changed critique format must change the critic's and refiner's digests (their cards
    then fail the shipped-digest test until rebuilt), and so must a change of their base."""
    critic, refiner, steps = (RECIPES[n].digest() for n in ("critic", "refiner", "steps"))
    original = zd.critique_text
    monkeypatch.setattr(zd, "critique_text", lambda *a, **k: original(*a, **k).replace("Step sentence", "Step"))
    assert RECIPES["critic"].digest() != critic and RECIPES["refiner"].digest() != refiner
    assert RECIPES["steps"].digest() == steps  # its targets hold no critique
    monkeypatch.undo()
    monkeypatch.setitem(RECIPES, "steps", dataclasses.replace(RECIPES["steps"], steps=251))
    assert RECIPES["critic"].digest() != critic


def test_lr_schedule_warmup_then_cosine_to_the_floor():
    config = LearnerConfig(lr_schedule="cosine", warmup_steps=10, total_steps=100, min_lr_ratio=0.1)
    assert lr_factor(0, config) == pytest.approx(0.1)
    assert lr_factor(9, config) == pytest.approx(1.0)
    assert lr_factor(10, config) == pytest.approx(1.0)
    assert lr_factor(55, config) == pytest.approx(0.55)  # halfway through the decay
    assert lr_factor(100, config) == pytest.approx(0.1)
    assert lr_factor(500, LearnerConfig()) == 1.0
    with pytest.raises(ValueError, match="total_steps"):
        LearnerConfig(lr_schedule="cosine").validate()


def test_emphasis_becomes_token_weights_at_the_right_labels():
    from types import SimpleNamespace

    from cdra.algos.experience import Sample, collate
    from cdra.models.tokenizer import build_byte_tokenizer
    from cdra.recipes.sft import SFTPair, response_tokens

    tokenizer = build_byte_tokenizer()
    session = SimpleNamespace(encode=lambda text: tokenizer(text, add_special_tokens=False).input_ids, eos_id=tokenizer.eos_token_id)
    item = zd.critic_item(PROBLEM, corrupt=True, rng=random.Random(1))
    ids, weights = response_tokens(session, SFTPair("x", item.prompt, item.target, item.emphasis), 20.0)
    assert ids[-1] == tokenizer.eos_token_id and len(weights) == len(ids)
    heavy = [i for i, w in enumerate(weights) if w == 20.0]
    assert [tokenizer.decode([ids[i]]) for i in heavy] == ["7", "D", "1", "0", "s"] and weights.count(1.0) == len(ids) - 5
    assert response_tokens(session, SFTPair("x", item.prompt, item.target, item.emphasis), 1.0)[1] is None

    batch = collate([Sample([5, 6], [7, 8, 9], token_weights=[1.0, 20.0, 1.0]), Sample([5], [7])], pad_id=0)
    assert batch["token_weights"].tolist() == [[0.0, 1.0, 20.0, 1.0], [1.0, 0.0, 0.0, 0.0]]


def test_genprm_items_judge_the_first_wrong_step_with_the_right_label():
    problem = make_problem(7, (("+", 4), ("-", 3)))
    right = zd.genprm_item(problem, random.Random(0), "right", True)
    assert right.label is True and parse_prm_score(right.target) == 1.0
    assert "Judge:" in right.prompt and "The answer is" not in right.prompt.split("Step: ")[0]
    for variant in ("arithmetic", "input"):
        item = zd.genprm_item(problem, random.Random(1), variant, True)
        assert item.label is False and parse_prm_score(item.target) == -1.0
    # slip at step 1 (starts from 5, not 7): "input 5 (expected 7): DIFFERENT"
    slipped = (ArithmeticStep("+", 5, 4, 9), ArithmeticStep("-", 9, 3, 6))
    assert [step_locally_correct(problem, slipped, i) for i in range(2)] == [False, True]
    assert judge_steps(problem, slipped) == [False, False]
    text = step_judgement_text(problem, slipped, 0)
    assert text == ("**Reasoning:** input 5 (expected 7): DIFFERENT; recomputed 5+4=9; last digits 9 vs 9: same "
                    "**SCORE:** -1")
    assert [text[k] for k in judgement_key_offsets(text)] == ["7", "D", "9", "s", "-"]
    assert step_judgement_text(problem, slipped, 1).endswith("input 9 (expected 9): same; recomputed 9-3=6; "
                                                            "last digits 6 vs 6: same **SCORE:** 1")


def test_genprm_training_and_heldout_mixes():
    problems = make_problems(400, 0, zd.DEFAULT_SYNTHETIC, "train")
    items = zd.training_items("genprm", problems, 0)
    wrong = sum(not i.label for i in items) / len(items)
    assert 0.4 < wrong < 0.6  # about half the judged steps are wrong
    heldout = zd.heldout_items("genprm", make_problems(8, 0, zd.DEFAULT_SYNTHETIC, "test"))
    assert [i.label for i in heldout] == [True, False] * 4
    assert zd.score("genprm", heldout[1], heldout[1].target) == (1.0, 1.0)
    assert zd.score("genprm", heldout[1], " **SCORE:** 1") == (0.0, 1.0)
    assert zd.score("genprm", heldout[1], " no score") == (0.0, 0.0)
    metrics = zd.heldout_metrics("genprm", heldout[:2], [" **SCORE:** 1", " **SCORE:** 1"])
    assert (metrics["acc_on_correct"], metrics["acc_on_wrong"], metrics["accuracy"]) == (1.0, 0.0, 0.5)


def test_step_judge_prompt_flattens_previous_steps():
    steps = ["Step 1: 3+4=7\n", "Step 2: 7-2=5\nThe answer is 5."]
    assert render_step_judge("genprm_step_judge_short", "Q?", steps, 0) == "Q: Q?\nPrev: none\nStep: Step 1: 3+4=7\nJudge:"
    assert render_step_judge("genprm_step_judge_short", "Q?", steps, 1) == (
        "Q: Q?\nPrev: Step 1: 3+4=7\nStep: Step 2: 7-2=5 The answer is 5.\nJudge:")


def test_process_correctness_from_the_question_text():
    problem = problem_from_question("Start with 7. Add 4. Multiply by 3.")
    assert problem is not None and problem.answer == "33"
    assert process_correct(problem, " Step 1: 7+4=11\nStep 2: 11*3=33\nThe answer is 33.")
    assert not process_correct(problem, " Step 1: 7+4=10\nStep 2: 11*3=33\nThe answer is 33.")  # right answer, wrong step
    assert not process_correct(problem, " Step 1: 7+4=11\nThe answer is 33.")  # a step missing
    assert problem_from_question("What is 2+2?") is None
    for p in make_problems(20, 3, zd.DEFAULT_SYNTHETIC, "test"):
        assert problem_from_question(p.question).steps == p.steps
