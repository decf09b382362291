"""CDRA's pieces: advantages from judged steps, the judge's parse, process accuracy (pure)."""

from __future__ import annotations

import math

import pytest

from cdra.data.synthetic import problem_from_question, step_truths
from cdra.recipes.cdra import CDRAConfig, group_advantages, oracle_steps, process_fields, step_judge
from cdra.recipes.evaluation import add_record_fields
from cdra.rewards.judging import Judgement, steps_splitter
from cdra.rewards.prm import token_after
from cdra.runtime.scorer import ScoreItem, ScoreResult


def _judged(step_scores, spans):
    return ScoreResult(sum(step_scores) / len(step_scores), step_scores=step_scores, step_spans=spans)


def test_per_position_advantages_of_a_group_of_two():
    # both responses: step 1 = tokens 0-1, step 2 = token 2; only step 2's score differs
    config = CDRAConfig(group_size=2)
    rows = [[1.0, 1.0, 1.0], [1.0, 1.0, -1.0]]
    judged = [_judged([1.0, 1.0], [(0, 2), (2, 3)]), _judged([1.0, -1.0], [(0, 2), (2, 3)])]
    adv = group_advantages(config, rows, judged, [ScoreResult(1.0)] * 2, [3, 3])
    s = 1 / math.sqrt(2)
    assert adv[0] == pytest.approx([0, 0, s], abs=1e-6) and adv[1] == pytest.approx([0, 0, -s], abs=1e-6)


def test_step_return_advantages_spread_over_each_steps_tokens():
    # the outcome (weight 1) joins the last step's score
    config = CDRAConfig(group_size=2, advantage="step_return", outcome_weight=1.0)
    judged = [_judged([1.0, 1.0], [(0, 2), (2, 3)]), _judged([1.0, -1.0], [(0, 1), (1, 3)])]
    outcomes = [ScoreResult(1.0), ScoreResult(0.0)]
    adv = group_advantages(config, [[0.0] * 4, [0.0] * 3], judged, outcomes, [4, 3])
    # step returns: A [1 + 1 + 1, 1 + 1] = [3, 2]; B [1 - 1 + 0, -1 + 0] = [0, -1]
    # step 0 over {3, 0}: +-1.5 / std(3 / sqrt 2) = +-1/sqrt 2; step 1 over {2, -1}: the same
    s = 1 / math.sqrt(2)
    assert adv[0] == pytest.approx([s, s, s, 0], abs=1e-6)  # token 3 (EOS) is in no step
    assert adv[1] == pytest.approx([-s, -s, -s], abs=1e-6)


def test_pers_genprm_parse_and_unparsed_judgements():
    spec = step_judge(CDRAConfig(judge_readout="score"), judge_tokenizer=None)
    assert spec.parse(Judgement(" **Reasoning:** ... **SCORE:** -1", [])) == -1.0
    assert spec.parse(Judgement(" **Reasoning:** ... no score", [])) is None  # scored 0 and counted by the judge pool
    assert spec.aggregate([None]) == 0.0
    prompt = spec.build_prompt(ScoreItem("", "", metadata={"question": "Start with 1. Add 2."}), ["Step 1: 1+2=3"], 0)
    assert prompt == "Q: Start with 1. Add 2.\nPrev: none\nStep: Step 1: 1+2=3\nJudge:"


class _WordTokenizer:
    """A stand-in vocabulary for the parse logic: one token per word piece."""
    vocab = ["The", " step", " is ", "\\boxed{", "Yes", "No", "}", " Yes", " No"]

    def convert_tokens_to_ids(self, token):
        return self.vocab.index(token)

    def decode(self, ids):
        return "".join(self.vocab[i] for i in ids)


def test_genprm_variant_reads_p_yes_after_the_box():
    tok = _WordTokenizer()
    spec = step_judge(CDRAConfig(prm="genprm", judge_samples=4, judge_temperature=0.7), tok)
    ids = [0, 1, 2, 3, 4, 6]  # "The step is \boxed{Yes}"
    table = [{}] * len(ids)
    # at the position after the box: P(Yes) 0.3 + P( Yes) 0.1 vs P(No) 0.1 -> 0.4 / 0.5
    table[4] = {4: math.log(0.3), 7: math.log(0.1), 5: math.log(0.1)}
    assert spec.parse(Judgement(tok.decode(ids), ids, table)) == pytest.approx(0.8)
    assert spec.parse(Judgement("The step is", [0, 1, 2], [{}] * 3)) is None  # no box: unparsed
    assert spec.aggregate([0.8, None, 0.4, 0.4]) == pytest.approx(0.4)  # N judgements, unparsed count 0


def test_token_after_finds_the_yes_no_position():
    assert token_after(["The", " step", " is ", "\\boxed{", "Yes", "}"], "\\boxed{") == 4
    assert token_after(["\\boxed{", "No", "} then \\boxed{", "Yes"], "\\boxed{") == 3  # the last box counts
    assert token_after(["no box"], "\\boxed{") is None
    assert token_after(["\\boxed{"], "\\boxed{") is None  # nothing generated after it


def test_process_fields_of_records():
    right = {"question": "Start with 7. Add 4. Subtract 3.", "greedy": " Step 1: 7+4=11\nStep 2: 11-3=8\nThe answer is 8.", "correct": True}
    slip = {"question": "Start with 7. Add 4. Subtract 3.", "greedy": " Step 1: 7+4=12\nStep 2: 11-3=8\nThe answer is 8.", "correct": True}
    wrong_answer = {"question": "Start with 1. Add 1. Add 1.", "greedy": " Step 1: 1+1=2\nStep 2: 2+1=3\nThe answer is 4.", "correct": False}
    assert process_fields(right) == {"process_accuracy": 1.0, "answer_and_process_accuracy": 1.0}
    assert process_fields(slip) == {"process_accuracy": 0.0, "answer_and_process_accuracy": 0.0}
    assert process_fields(wrong_answer) == {"process_accuracy": 1.0, "answer_and_process_accuracy": 0.0}
    assert process_fields({"question": "not a synthetic question", "greedy": "4", "correct": True}) == {}
    records = [dict(r) for r in (right, slip, wrong_answer)] + [{"question": "other", "greedy": "4", "correct": True}]
    assert add_record_fields(records, process_fields) == {"process_accuracy": pytest.approx(2 / 3),
                                                         "answer_and_process_accuracy": pytest.approx(1 / 3)}
    assert records[1]["process_accuracy"] == 0.0 and "process_accuracy" not in records[3]


def test_step_truths_judge_each_step_given_the_steps_before_it():
    problem = problem_from_question("Start with 7. Add 4. Subtract 3.")
    # step 1 slips (12); step 2 continues correctly from the written 12 -> locally right
    assert step_truths(problem, ["Step 1: 7+4=12\n", "Step 2: 12-3=9\nThe answer is 9."]) == [False, True]
    assert step_truths(problem, ["Step 1: 7+4=11\n", "Step 2: 11-3=8"]) == [True, True]
    assert step_truths(problem, ["Step 1: 7+4=11\n", "Step 2: 11+3=14"]) == [True, False]  # wrong operation
    assert step_truths(problem, ["Step 1: 7+4=11 and 11-3=8"]) is None  # two computations in one span
    assert step_truths(problem, ["Step 1: 7+4=11", "Step 2: 11-3=8", "Step 3: 8+1=9"]) == [True, True, False]


@pytest.mark.parametrize("override, message", [
    ({"step_weight": 0.0, "outcome_weight": 0.0}, "nothing to learn from"),
    ({"group_size": 1}, "group_size"),
    ({"judge_samples": 4}, "judge_temperature"),
    ({"rollout_batch_size": 10}, "multiple of group_size"),
])
def test_config_errors(override, message):
    from cdra.config import ConfigError

    config = CDRAConfig(**override)
    with pytest.raises((ConfigError, ValueError), match=message):
        config.validate()


def test_reasoned_readout_takes_the_verdict_from_the_judges_stated_values():
    from cdra.rewards.prm import reasoned_step_score

    # the zoo judge's typical miss: digits read right (2 vs 3), then marked "same"
    miss = "**Reasoning:** input 3 (expected 3): same; recomputed 3+9=12; last digits 2 vs 3: same **SCORE:** 1"
    assert reasoned_step_score(miss) == -1.0
    assert reasoned_step_score(miss.replace("2 vs 3", "2 vs 2")) == 1.0
    assert reasoned_step_score("**Reasoning:** input 4 (expected 3): DIFFERENT; recomputed 4+9=13; last digits 3 vs 3: same") == -1.0
    assert reasoned_step_score("**SCORE:** 1") is None  # no stated values: unparsed (0, counted)
    spec = step_judge(CDRAConfig(judge_readout="reasoning"), judge_tokenizer=None)
    assert spec.parse(Judgement(miss, [])) == -1.0
    assert step_judge(CDRAConfig(judge_readout="score"), judge_tokenizer=None).parse(Judgement(miss, [])) == 1.0


def test_oracle_step_scores_follow_the_ground_truth():
    class Spans:  # the judge pool's step split, for a byte-level tokenizer: token t = character t
        def step_spans(self, item, spec):
            chars = steps_splitter()(item.response)
            return [item.response[a:b] for a, b in chars], chars

    text = " Step 1: 7+4=12\nStep 2: 12-3=9\nThe answer is 9."
    [judged] = oracle_steps(Spans(), None, [ScoreItem(text, "8", metadata={"question": "Start with 7. Add 4. Subtract 3."})])
    assert judged.step_scores == [-1.0, 1.0]  # the slip, then a step right given it
    assert judged.step_spans == [(1, 16), (16, len(text))]
