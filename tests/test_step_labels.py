"""PRM800K- and Math-Shepherd-style step-labelled rows -> solutions -> step-judge SFT pairs."""

from __future__ import annotations

import json

import pytest

from cdra.data.loaders import DataError
from cdra.data.step_labels import load_step_labelled, step_judge_pairs

PRM800K_ROW = {
    "question": {"problem": "What is 2+3*4?", "ground_truth_answer": "14"},
    "label": {"steps": [
        {"completions": [{"text": "3*4 = 12.", "rating": 1}, {"text": "2+3 = 5.", "rating": -1}], "chosen_completion": 0},
        {"completions": [{"text": "2+12 = 15.", "rating": -1}], "chosen_completion": None},
        {"completions": [{"text": "never reached", "rating": 1}], "chosen_completion": 0},
    ]},
}
SHEPHERD_ROW = {
    "input": "Tom has 3 apples and buys 2. How many? Step 1: 3+2=5 ки\nStep 2: The answer is: 6 ки",
    "label": "Tom has 3 apples and buys 2. How many? Step 1: 3+2=5 +\nStep 2: The answer is: 6 -",
}


def _write(tmp_path, rows):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_prm800k_takes_chosen_completions_and_stops_where_the_labeller_did(tmp_path):
    [sol] = load_step_labelled(_write(tmp_path, [PRM800K_ROW]), "prm800k")
    assert sol.question == "What is 2+3*4?" and sol.answer == "14"
    assert sol.steps == ("3*4 = 12.", "2+12 = 15.") and sol.labels == (1, -1)


def test_math_shepherd_reads_tags_as_labels(tmp_path):
    [sol] = load_step_labelled(_write(tmp_path, [SHEPHERD_ROW]), "math_shepherd")
    assert sol.question == "Tom has 3 apples and buys 2. How many?"
    assert sol.steps == ("Step 1: 3+2=5", "Step 2: The answer is: 6") and sol.labels == (1, -1)
    pairs = step_judge_pairs([sol], "genprm_step_judge_short")
    assert pairs == [("Q: Tom has 3 apples and buys 2. How many?\nPrev: none\nStep: Step 1: 3+2=5\nJudge:", " **SCORE:** 1"),
                     ("Q: Tom has 3 apples and buys 2. How many?\nPrev: Step 1: 3+2=5\nStep: Step 2: The answer is: 6\nJudge:",
                      " **SCORE:** -1")]


def test_bad_rows_are_named_or_counted(tmp_path):
    bad = {"input": "Q? Step 1: x ки", "label": "Q? Step 1: x ?"}
    path = _write(tmp_path, [SHEPHERD_ROW, bad])
    with pytest.raises(DataError, match=r"rows.jsonl, row 2: 'label' does not match"):
        load_step_labelled(path, "math_shepherd")
    loaded = load_step_labelled(path, "math_shepherd", on_error="skip")
    assert len(loaded) == 1 and loaded.skipped == 1
    with pytest.raises(DataError, match="row 1: step 1: rating must be"):
        load_step_labelled(_write(tmp_path, [{"question": {"problem": "q"}, "label": {"steps": [
            {"completions": [{"text": "t", "rating": 5}], "chosen_completion": 0}]}}]), "prm800k")
    with pytest.raises(ValueError, match="step-label format"):
        load_step_labelled(path, "prm900k")


def test_step_labelled_files_load_as_step_judge_training_examples(tmp_path):
    """`jobs/sft.py train_data.format=math_shepherd prompt_template=question_only` trains the
    judge on these: one example per labelled step, the prompt rendered, the target its score."""
    from cdra.data.loaders import DatasetSpec, load_dataset_spec
    from cdra.recipes.sft import training_pairs

    spec = DatasetSpec(format="math_shepherd", path=str(_write(tmp_path, [SHEPHERD_ROW])))
    examples = load_dataset_spec(spec)
    [sol] = load_step_labelled(spec.path, "math_shepherd")
    assert [(e.question, e.solution) for e in examples] == step_judge_pairs([sol], "genprm_step_judge")
    assert [e.answer for e in examples] == ["1", "-1"] and examples[1].id.endswith("-step2")
    pairs = training_pairs(spec, examples, "question_only", "auto")
    assert [p.solution for p in pairs] == [" **SCORE:** 1", " **SCORE:** -1"]
    prm = load_dataset_spec(DatasetSpec(format="prm800k", path=str(_write(tmp_path, [PRM800K_ROW])), limit=1))
    assert len(prm) == 1 and prm[0].solution == " **SCORE:** 1"
