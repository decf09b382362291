"""Critique evaluation metrics, pass@k and prompt formatting (pure logic)."""

from __future__ import annotations

import json
import math

import pytest

from cdra.algos.sampled_metrics import majority_correct, pass_at_k
from cdra.config import ConfigError, load_config
from cdra.data.example import TaskExample
from cdra.recipes.critique_support import (
    PromptConfig,
    PromptFormatter,
    critique_fields,
    discrimination_metrics,
    final_correct_by_question,
    format_paired,
    format_table,
    paired_comparison,
    read_eval_samples,
    refine_fields,
    refinement_metrics,
    sign_test_p,
)
from cdra.recipes.evaluate import EvaluateConfig


def test_refinement_metrics():
    m = refinement_metrics([True, True, False, False], [True, False, True, True])
    assert m == pytest.approx({"acc0": 0.5, "acc": 0.75, "delta": 0.25, "delta_c_to_i": 0.25, "delta_i_to_c": 0.5})
    with pytest.raises(ValueError):
        refinement_metrics([True], [True, False])


def test_discrimination_metrics_over_parseable_verdicts():
    m = discrimination_metrics([True, None, False, True], [True, True, False, False])
    assert m["acc_dis"] == pytest.approx(2 / 3)  # (T,T) right, (F,F) right, (T,F) wrong; None skipped
    assert m["acc_dis_correct"] == 1.0
    assert m["acc_dis_incorrect"] == 0.5
    assert m["acc_dis_balanced"] == pytest.approx(0.75)
    assert m["acc_dis_all"] == 0.5 and m["verdict_rate"] == 0.75
    m = discrimination_metrics([None, None], [True, False])
    assert math.isnan(m["acc_dis"]) and m["acc_dis_all"] == 0.0


def test_pass_at_k():
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)  # 1 - C(3,3)/C(5,3)
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 3, 2) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_majority_vote():
    # "7" twice beats "8" once; graded on the first "7" (index 1)
    assert majority_correct(["8", "7", None, "7"], [False, True, False, True]) is True
    assert majority_correct(["8", "7", None, "7"], [True, False, False, False]) is False
    assert majority_correct(["8", "7"], [True, False]) is True  # a tie goes to the answer seen first
    assert majority_correct([None, None], [False, False]) is False
    with pytest.raises(ValueError):
        majority_correct(["1"], [True, False])


def test_sign_test_p():
    assert sign_test_p(3, 0) == pytest.approx(1 / 8)
    assert sign_test_p(2, 1) == pytest.approx(4 / 8)  # (C(3,2) + C(3,3)) / 2^3
    assert sign_test_p(0, 3) == 1.0 and sign_test_p(0, 0) == 1.0
    # 22 up, 6 down: sum of C(28, k) for k = 22..28 over 2^28
    assert sign_test_p(22, 6) == pytest.approx((376740 + 98280 + 20475 + 3276 + 378 + 28 + 1) / 2**28)
    with pytest.raises(ValueError):
        sign_test_p(-1, 2)


def test_paired_comparison_counts_shared_questions_only():
    baseline = {"a": True, "b": False, "c": True, "d": False, "only-baseline": True}
    current = {"a": True, "b": True, "c": False, "d": True, "only-current": False}
    got = paired_comparison(baseline, current)
    assert got == {"paired/n": 4.0, "paired/acc_baseline": 0.5, "paired/acc": 0.75,
                   "paired/gained": 2.0, "paired/lost": 1.0, "paired/sign_p": 0.5}
    assert format_paired(got) == ("paired with the baseline over 4 shared questions: accuracy after refinement "
                                  "50.0 % -> 75.0 %, 2 gained, 1 lost, one-sided sign test p = 0.5")
    with pytest.raises(ValueError, match="shares no question"):
        paired_comparison({"x": True}, {"y": True})


def _record(question: str, *correct: bool) -> dict:
    return {"question": question, "correct0": False, "rounds": [{"correct": c} for c in correct]}


def test_final_correct_by_question_keeps_first_repeat_and_last_round():
    records = [_record("q1", False, True), _record("q2", True, False), _record("q1", False, False)]
    assert final_correct_by_question(records) == {"q1": True, "q2": False}


def test_read_eval_samples_from_dir_or_file_and_bad_rows(tmp_path):
    rows = [_record("q1", True), _record("q2", False)]
    (tmp_path / "eval_samples.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert read_eval_samples(tmp_path) == rows
    assert read_eval_samples(tmp_path / "eval_samples.jsonl") == rows
    with pytest.raises(FileNotFoundError, match="baseline evaluation"):
        read_eval_samples(tmp_path / "missing")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"question": "q3", "rounds": []}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:2: not an evaluation record"):
        read_eval_samples(bad)
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl:1: not JSON"):
        read_eval_samples(bad)


class _Tok:
    """A tokenizer with no chat template: format_chat's `auto` falls back to chatml."""

    chat_template = None


def test_prompt_formatter_short_and_chat():
    example = TaskExample(id="x", question="Start with 3. Add 4.", answer="7")
    fields = refine_fields(example, " Step 1: 3+4=7\nThe answer is 7.", " Step sentence: 3+4=7\n")
    assert fields["response"].startswith("Step 1") and fields["critique"] == "Step sentence: 3+4=7"
    plain = PromptFormatter(_Tok(), PromptConfig())
    assert plain.text("critique", **critique_fields(example, " Step 1: 3+4=7")) == "Q: Start with 3. Add 4.\nA: Step 1: 3+4=7\nCritique:"
    chat = PromptFormatter(_Tok(), PromptConfig(chat_template="auto", system_prompt="Be brief."))
    text = chat.text("inference", question="Q?")
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nAnswer the following question.")
    assert "Question: Q?\nAnswer:<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    assert PromptConfig(chat_template="llama3", style="short").template("refine") == "critique_rl_refine_short"
    with pytest.raises(ConfigError, match="chat_template"):
        load_config(EvaluateConfig, ["prompts.chat_template=vicuna"])
    with pytest.raises(ConfigError, match="pass_k"):
        load_config(EvaluateConfig, ["eval.pass_samples=2", "eval.pass_k=[4]"])


def test_format_table_rows_and_missing_values():
    table = format_table({"before": {"eval/acc0": 0.5, "eval/acc": 0.5}, "after": {"eval/acc0": 0.5, "eval/acc": 0.625, "eval/pass@4": 0.75}})
    lines = table.splitlines()
    assert lines[0].split() == ["before", "after"]
    assert lines[1].split() == ["acc0", "50.00%", "50.00%"]
    assert lines[2].split() == ["acc", "50.00%", "62.50%"]
    assert lines[3].split() == ["pass@4", "-", "75.00%"]


def test_format_table_keeps_long_column_names_apart():
    table = format_table({"before": {"eval/acc": 0.5}, "stage I (step 4)": {"eval/acc": 0.25}, "after": {"eval/acc": 0.75}})
    header, row = table.splitlines()
    assert "before  stage I (step 4)" in header  # a 16-character name gets its own gap
    assert row.split() == ["acc", "50.00%", "25.00%", "75.00%"]
    assert len(header) == len(row)  # cells line up under their names
