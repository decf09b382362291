"""`python jobs/cdra.py` on real engines: the policy's steps are judged by the served genprm,
the scores land on exactly their steps' tokens, and process accuracy is reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cdra.rewards import split_steps

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_cdra_job_lays_judged_step_scores_on_their_tokens(tmp_path):
    from transformers import AutoTokenizer

    from cdra.models.zoo import checkpoint_path

    out = tmp_path / "cdra"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "cdra.py"), "steps=2", "rollout_batch_size=16", "eval_data.num_examples=16",
                           "run.eval_every=2", f"run.output_dir={out}", "run.use_wandb=false"],
                          env=env, capture_output=True, text=True, timeout=850)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["policy/version"] == 2.0
    for key in ("eval/accuracy", "eval/process_accuracy"):
        assert 0.0 <= summary[f"{key}_before"] <= 1.0 and 0.0 <= summary[key] <= 1.0
    assert summary["judge/errors"] == 0 and summary["judge/timeouts"] == 0
    assert summary["judge/prompts"] > 32  # 2 steps x 16 responses, about 2 judged steps each

    tokenizer = AutoTokenizer.from_pretrained(checkpoint_path("steps"))
    rows = pd.read_parquet(out / "experience.parquet")
    assert len(rows) == 32
    for _, row in rows.iterrows():
        meta = json.loads(row["metadata_json"])
        rewards, ids = list(row["token_rewards"]), list(row["response_ids"])
        body = [t for t in ids if t != tokenizer.eos_token_id]
        text = tokenizer.decode(body)
        assert len(text) == len(body)  # the tiny tokenizer is byte-level: token t is character t
        # token t carries the score of the step holding character t (0 outside the steps), plus
        # the default outcome term (weight 1) of the answer checker's 0/1 on every token
        spans = split_steps(text, max_steps=5)
        assert len(spans) == len(meta["step_scores"])
        expected = [meta["correct"]] * len(ids)
        for span, score in zip(spans, meta["step_scores"]):
            expected[span.start:span.end] = [score + meta["correct"]] * (span.end - span.start)
        assert rewards == pytest.approx(expected)
    assert set(rows["prompt_id"]) and all(json.loads(m)["process_correct"] in (0.0, 1.0) for m in rows["metadata_json"])


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_cdra_with_ground_truth_step_scores_raises_process_accuracy(tmp_path):
    """The loop turns step scores into better steps: with a perfect PRM (`prm=oracle`, the
    synthetic task's truth) a fixed-seed 15-step run raises held-out process accuracy (0.665 ->
    0.695 at seed 0; 3 seeds in docs/results/cdra.md). The served genprm is measured against the
    same truth before training."""
    out = tmp_path / "oracle"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "cdra.py"), "prm=oracle", "steps=15", "run.eval_every=15",
                           f"run.output_dir={out}", "run.use_wandb=false"], env=env, capture_output=True, text=True, timeout=850)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval/process_accuracy"] >= summary["eval/process_accuracy_before"] + 0.015, summary
    assert summary["eval/accuracy"] >= summary["eval/accuracy_before"]
    # the served judge on held-out steps of the policy's own samples, against the same truth
    assert summary["prm/items"] > 300 and summary["prm/wrong_items"] > 50
    assert 0.6 < summary["prm/auc"] < 1.0 and summary["prm/right_judged_right"] > 0.8
    assert summary["judge/errors"] == 0 and summary["prm/unlabelled_responses"] < 10
    rows = pd.read_parquet(out / "experience.parquet")
    assert len(rows) == 15 * 64
    for meta in map(json.loads, rows["metadata_json"][:64]):
        assert all(s in (1.0, -1.0) for s in meta["step_scores"])
        # a response with every step right, by the same truth, scored +1 on each step
        if meta["process_correct"] == 1.0:
            assert meta["step_scores"] == [1.0] * len(meta["step_scores"])
