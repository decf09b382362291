"""Paired comparison counts, the exact sign test, and judge-quality metrics on hand cases."""

import math

import pytest

from cdra.algos.judge_quality import judge_quality, roc_auc
from cdra.algos.paired import paired_counts, sign_test_p


def test_sign_test_matches_hand_binomial():
    # 5 gained, 1 lost: P(X <= 1 | n 6) = (1 + 6) / 64, two-sided 14 / 64
    assert sign_test_p(5, 1) == pytest.approx(14 / 64)
    assert sign_test_p(1, 5) == pytest.approx(14 / 64)
    assert sign_test_p(3, 3) == 1.0 and sign_test_p(0, 0) == 1.0
    assert sign_test_p(10, 0) == pytest.approx(2 / 1024)


def test_paired_counts_per_question():
    a = {"q1": 1.0, "q2": 0.0, "q3": 0.0, "q4": 1.0}
    b = {"q1": 1.0, "q2": 1.0, "q3": 1.0, "q4": 0.0}
    c = paired_counts(a, b)
    assert (c.n, c.gained, c.lost) == (4, 2, 1)
    assert c.a_mean == 0.5 and c.b_mean == 0.75 and c.delta == pytest.approx(0.25)
    assert c.p == pytest.approx(sign_test_p(2, 1))
    with pytest.raises(ValueError, match="different questions"):
        paired_counts(a, {"q1": 1.0})


def test_roc_auc_hand_values():
    # positives 0.9, 0.4; negatives 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1) -> 3/4
    assert roc_auc([0.9, 0.4, 0.5, 0.1], [True, True, False, False]) == pytest.approx(0.75)
    assert roc_auc([1.0, 1.0, -1.0], [True, False, False]) == pytest.approx(0.75)  # one tie counts 1/2
    assert math.isnan(roc_auc([0.3, 0.2], [True, True]))


def test_judge_quality_counts_right_and_wrong_items():
    q = judge_quality([1.0, 1.0, -1.0, 1.0, -1.0], [True, True, True, False, False])
    assert q["right_judged_right"] == pytest.approx(2 / 3) and q["wrong_judged_wrong"] == pytest.approx(0.5)
    assert q["accuracy"] == pytest.approx(3 / 5) and q["balanced_accuracy"] == pytest.approx(7 / 12)
    assert q["items"] == 5 and q["wrong_items"] == 2


def _write_run(root, name, steps):
    from cdra.recipes.evaluation import write_eval_records

    for step, correct in steps.items():
        write_eval_records(root / name / "eval" / f"eval-step{step}.jsonl",
                           [{"id": f"q{i}", "correct": bool(c)} for i, c in enumerate(correct)])
    return str(root / name)


def test_compare_job_pairs_runs_per_question(tmp_path, capsys):
    from cdra.recipes.compare import main

    start = [1, 0, 0, 0]
    a = _write_run(tmp_path, "a", {0: start, 20: [1, 1, 0, 0]})
    b = _write_run(tmp_path, "b", {0: start, 10: [0, 0, 0, 0], 20: [0, 1, 1, 1]})
    assert main(["--arm", f"A={a}", "--arm", f"B={b}"]) == 0
    table = capsys.readouterr().out
    assert "| A | 0.250 | 0.500 (+1/-0) | 0.500 | +1 / -0 (p 1.000) |" in table  # step 20 vs step 0
    assert "| B | 0.250 | 0.750 (+3/-1) | 0.750 | +3 / -1 (p 0.625) |" in table
    assert "| B vs A | +0.250 (+2/-1, p 1.00) | +2 / -1 (p 1.000) |" in table
    assert main(["--arm", f"A={tmp_path / 'missing'}"]) == 2
    assert "no evaluation records" in capsys.readouterr().err
