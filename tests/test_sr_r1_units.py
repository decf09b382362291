"""SR-R1 recipe pieces without actors: verdict parsing per template, the judge metrics against
the oracle, held-out pairs, config validation (a one-line error before any actor starts)."""

from __future__ import annotations

import math

import pytest

from cdra.config import ConfigError, load_config
from cdra.recipes import sr_r1
from cdra.recipes.common import load_examples, synthetic_spec
from cdra.rewards.elo import sr_r1_answer
from cdra.rewards.judging import Judgement
from cdra.runtime.judge import PromptScore


def _j(text: str) -> Judgement:
    return Judgement(text, [])


def test_verdict_parser_reads_the_template_tail():
    solve = sr_r1.verdict_parser("sr_r1_judge_solve")
    assert solve(_j(" Step 1: 1+1=2. Answer 2. A: 2. B: 3.\nWinner: response A")) == 1.0
    assert solve(_j(" ... Winner: response B")) == 0.0
    assert solve(_j(" A")) is None  # this template's prompt does not end "Winner: response"
    short = sr_r1.verdict_parser("sr_r1_judge_short")
    assert short(_j(" A")) == 1.0 and short(_j(" B")) == 0.0 and short(_j(" maybe")) is None
    rubric = sr_r1.verdict_parser("sr_r1_judge")  # its instructions name both letters: never a verdict
    assert rubric(_j("Correctness favours B.\nWinner: response B")) == 0.0 and rubric(_j("no verdict")) is None
    assert math.isnan(sr_r1.only_verdict([None])) and sr_r1.only_verdict([0.0]) == 0.0
    assert sr_r1.verdict_of(PromptScore(math.nan, [])) is None
    assert sr_r1.verdict_of(PromptScore(0.0, [], "timeout: slow")) is None
    assert sr_r1.verdict_of(PromptScore(1.0, [])) == "A" and sr_r1.verdict_of(PromptScore(0.0, [])) == "B"


def test_judge_metrics_by_hand():
    # (letter, correct i, correct j, winner, i, j)
    verdicts = [("A", 1.0, 0.0, 0, 0, 1),   # oracle pair, right
                ("A", 0.0, 1.0, 0, 0, 2),   # oracle pair, wrong
                (None, 1.0, 0.0, None, 1, 2),  # oracle pair, unparsed: a disagreement
                ("B", 1.0, 1.0, 3, 0, 3)]   # both correct: not an oracle pair
    m = sr_r1.judge_metrics(verdicts, [(3.0, 1.0), (0.0, 0.0), (1.5, 1.0), (1.5, 0.0)], dropped=1)
    assert m["judge/agreement"] == pytest.approx(1 / 3) and m["judge/oracle_pairs"] == 3
    assert m["judge/position_bias_a"] == pytest.approx(2 / 3)
    assert m["judge/parse_failure_rate"] == 0.25 and m["judge/dropped_verdicts"] == 1
    # elo (3, 0, 1.5, 1.5) vs correct (1, 0, 1, 0): cov 0.375, sd 1.0607 and 0.5
    assert m["reward/elo_correct_corr"] == pytest.approx(0.375 / (math.sqrt(1.125) * 0.5))
    assert "reward/elo_correct_corr" not in sr_r1.judge_metrics([], [(1.5, 1.0), (1.5, 0.0)], 0)


def test_heldout_pairs_alternate_and_hold_one_right_answer():
    examples = load_examples(synthetic_spec("test", 12), "eval_data")
    pairs = sr_r1.heldout_pairs(examples, 10, seed=0)
    assert len(pairs) == 10 and [p[3] for p in pairs] == ["A", "B"] * 5
    for (question, a, b, right), example in zip(pairs, examples):
        assert question == example.question
        winner, loser = (a, b) if right == "A" else (b, a)
        assert sr_r1_answer(winner) == example.answer != sr_r1_answer(loser)
    assert pairs == sr_r1.heldout_pairs(examples, 10, seed=0)


@pytest.mark.parametrize("override, message", [
    (["judge=peer"], "judge"),
    (["judge_path=/x"], "judge_path"),
    (["elo_weight=-1"], "weights"),
    (["elo_weight=0", "accuracy_weight=0", "format_weight=0", "tag_count_weight=0"], "nothing to learn"),
    (["group_size=1"], "group_size"),
    (["rollout_batch_size=12"], "multiple"),
    (["judge_template=r1_short"], "pair fields"),
    (["elo_passes=0"], "elo_passes"),
])
def test_bad_config_is_one_line(override, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        load_config(sr_r1.SRR1Config, override)


def test_pure_self_reward_and_accuracy_only_configs_load():
    pure = load_config(sr_r1.SRR1Config, ["accuracy_weight=0"])
    assert pure.weights == (1.0, 0.0, 1.0, 1.0)
    baseline = load_config(sr_r1.SRR1Config, ["elo_weight=0", "format_weight=0", "tag_count_weight=0"])
    assert baseline.weights == (0.0, 1.0, 0.0, 0.0)
    frozen = load_config(sr_r1.SRR1Config, ["judge=frozen"])
    assert [r.name for r in sr_r1.roles_of(frozen) if getattr(r, "name", "") == sr_r1.JUDGE_ROLE] == [sr_r1.JUDGE_ROLE]
