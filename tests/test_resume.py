"""Exact resume: stop after step k, resume, and match an uninterrupted run step for step."""

from __future__ import annotations

import random

import pytest

from cdra.config import load_config
from cdra.data.example import TaskExample
from cdra.recipes import grpo
from cdra.recipes.common import PromptStream
from cdra.runtime.tracking import read_metrics

pytestmark = pytest.mark.timeout(900)


def _config(r1_model: str, out, *extra: str) -> grpo.GRPOConfig:
    return load_config(grpo.GRPOConfig, [
        f"model_path={r1_model}", "steps=3", "rollout_batch_size=16", "group_size=4", "train_batch_size=16",
        "num_rollout_workers=1", "learner.num_ranks=1", "num_scorers=1", "eval_data.num_examples=4",
        f"run.output_dir={out}", "run.use_wandb=false", "run.eval_every=100", *extra,
    ])


@pytest.mark.integration
def test_resume_continues_counter_and_data_order(tmp_path, r1_model, ray_local):
    grpo.run(_config(r1_model, tmp_path / "straight"))
    stopped = grpo.run(_config(r1_model, tmp_path / "split", "run.stop_after=1"))
    assert stopped["policy/version"] == 1
    assert not (tmp_path / "split" / "final_model").exists()
    grpo.run(_config(r1_model, tmp_path / "split", "run.resume=true"))

    straight = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    resumed = read_metrics(tmp_path / "split" / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [r["step"] for r in straight] == [1, 2, 3]
    assert [r["data/prompt_hash"] for r in resumed] == [r["data/prompt_hash"] for r in straight]
    assert [r["data/epoch"] for r in resumed] == [r["data/epoch"] for r in straight] == [4 / 1400, 8 / 1400, 12 / 1400]  # 16 rollouts = 4 prompts x 4
    assert [r["policy/version"] for r in resumed] == [1.0, 2.0, 3.0]
    assert (tmp_path / "split" / "final_model" / "config.json").exists()


def test_prompt_stream_epoch_counts_passes_over_the_data():
    examples = [TaskExample(id=f"q{i}", question=f"q{i}", answer=str(i)) for i in range(4)]
    stream = PromptStream(examples, seed=0)
    assert stream.epoch == 0.0
    first = stream.next(3)
    assert stream.epoch == 0.75
    second = stream.next(3)
    assert stream.epoch == 1.5
    assert sorted(e.id for e in first + second[:1]) == ["q0", "q1", "q2", "q3"]  # one full pass before any repeat
    # each epoch's order is its own seeded shuffle (seed * 1_000_003 + epoch), also across a cached epoch boundary
    orders = []
    for epoch in (0, 1):
        order = list(range(4))
        random.Random(epoch).shuffle(order)
        orders += [f"q{i}" for i in order]
    assert [e.id for e in first + second] == orders[:6]
    assert [e.id for e in stream.next(2)] == orders[6:8]
