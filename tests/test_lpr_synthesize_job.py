"""`python jobs/synthesize_process_rewards.py` on a real vLLM engine: stopped after one shard,
resumed, it ends with every question once, the first shard untouched, in the contract's schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jobscript import JobResult, run_job_script

from cdra.recipes.lpr_synthesize import STATE_COLUMNS, read_states


def _job(out: Path, *extra: str) -> JobResult:
    proc = run_job_script("synthesize_process_rewards", "train_data.num_examples=8", "chunk_questions=4", "synthesis.num_solutions=3",
                          "synthesis.num_completions=2", "synthesis.keep_probability=1.0", f"run.output_dir={out}", *extra)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_synthesis_stops_and_resumes_without_duplicates(tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "synth"
    states = out / "process_rewards"
    _job(out, "run.stop_after=1")
    first = states / "part-00000.parquet"
    assert [p.name for p in states.glob("part-*.parquet")] == [first.name]
    before = first.read_bytes()
    assert len({r["question_id"] for r in read_states(states)}) == 4
    assert json.loads((out / "summary.json").read_text())["synthesis/complete"] == 0.0

    proc = _job(out, "run.resume=true")
    assert "resuming: 4 questions in 1 shards, 4 to go" in proc.stdout + proc.stderr
    assert first.read_bytes() == before  # the finished questions were not redone
    rows = read_states(states)
    assert len({r["question_id"] for r in rows}) == 8
    keys = [(r["question_id"], r["solution_index"], r["kind"], r["step_index"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert sorted((q, i) for q, i, kind, _ in keys if kind == "full") == sorted((q, i) for q in {k[0] for k in keys} for i in range(3))

    assert set(STATE_COLUMNS) <= set(pq.read_schema(first).names)
    for r in rows:
        assert r["k"] == 2 and r["policy_version"] == 0 and 0 <= r["value"] <= 2
        assert r["hard_label"] == int(r["value"] > 0) and r["soft_label"] == r["value"] / 2
        if r["kind"] == "full":
            assert r["value"] == 2 * r["correct"] and r["prefix"] == r["response"] and r["completions"] == []
            assert r["step_index"] == r["num_steps"]
        else:  # every prefix of the 2-step solutions is kept (keep_probability 1): one step, continued twice
            assert r["step_index"] == 1 and r["num_steps"] == 2 and r["response"].startswith(r["prefix"])
            assert len(r["completions"]) == 2 and r["value"] == sum(r["completion_correct"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["synthesis/questions"] == 8 and summary["synthesis/solutions"] == 24 and summary["synthesis/complete"] == 1.0
    assert summary["synthesis/completions"] == 2 * summary["synthesis/prefix_states"] > 0
    assert 0.0 <= summary["labels/all_hard_agreement"] <= 1.0 and summary["labels/prefix_states"] > 0
