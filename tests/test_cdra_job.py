"""`python jobs/cdra.py` on real engines, the embedded default: the policy's steps are judged by
the served genprm, the scores land on exactly their steps' tokens, and held-out process accuracy
rises."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from jobscript import run_job_script
from judged_rows import judged_rows


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_cdra_default_raises_process_accuracy(tmp_path):
    """The embedded default at seed 0 (20 steps, the served genprm's verdicts read off its
    reasoning) raises held-out process accuracy: 0.665 -> 0.725 here, +0.045 to +0.06 on seeds
    0-2 against +0.015 / -0.01 / +0.015 for outcome-only GRPO (docs/results/cdra.md). Before
    training the served judge is measured against the synthetic task's truth."""
    out = tmp_path / "default"
    proc = run_job_script("cdra", "run.eval_every=20", f"run.output_dir={out}", "run.use_wandb=false")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval/process_accuracy"] >= summary["eval/process_accuracy_before"] + 0.03, summary
    assert summary["eval/accuracy"] >= summary["eval/accuracy_before"]
    # the served judge on held-out steps of the policy's own samples, against the same truth
    assert summary["prm/items"] > 300 and summary["prm/wrong_items"] > 50
    assert summary["prm/auc"] > 0.8 and summary["prm/wrong_judged_wrong"] > 0.7 and summary["prm/right_judged_right"] > 0.8
    assert summary["judge/errors"] == 0 and summary["judge/timeouts"] == 0 and summary["prm/unlabelled_responses"] < 10
    assert summary["policy/version"] == 20.0 and summary["judge/prompts"] > 20 * 64  # about 2 judged steps a response
    assert len(pd.read_parquet(out / "experience.parquet")) == 20 * 64
    # per-question records of the first and last evaluation, which the paired comparison reads
    from cdra.recipes.compare import load_run, outcomes

    records = load_run(str(out))
    assert (records.first_step, records.last_step) == (0, 20) and len(records.last) == 200
    assert sum(outcomes(records.last, "process_accuracy").values()) / 200 == pytest.approx(summary["eval/process_accuracy"])
    _assert_step_scores_lie_on_their_tokens(out / "experience.parquet")


def _assert_step_scores_lie_on_their_tokens(experience) -> None:
    """Token t of a response carries the judged score of the step holding character t (0 outside
    the steps), plus the default outcome term (weight 1) of the answer checker's 0/1 on every token."""
    from transformers import AutoTokenizer

    from cdra.models.zoo import checkpoint_path

    tokenizer = AutoTokenizer.from_pretrained(checkpoint_path("steps"))
    for r in judged_rows(experience, tokenizer):
        correct = r.meta["correct"]
        expected = [correct] * len(r.ids)
        for span, score in zip(r.spans, r.meta["step_scores"]):
            expected[span.start:span.end] = [score + correct] * (span.end - span.start)
        assert r.rewards == pytest.approx(expected)
        assert r.meta["process_correct"] in (0.0, 1.0)
