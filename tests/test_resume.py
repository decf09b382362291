"""Exact resume: stop after step k, resume, and match an uninterrupted run step for step."""

from __future__ import annotations

import random
import zlib

import pytest

from cdra.config import load_config
from cdra.data.example import TaskExample
from cdra.recipes import grpo
from cdra.recipes.common import PromptStream, latest_checkpoint, load_examples
from cdra.runtime.tracking import read_metrics

pytestmark = pytest.mark.timeout(900)


def _config(r1_model: str, out, *extra: str) -> grpo.GRPOConfig:
    return load_config(grpo.GRPOConfig, [
        f"model_path={r1_model}", "steps=3", "rollout_batch_size=16", "group_size=4", "train_batch_size=16",
        "num_rollout_workers=1", "learner.num_ranks=1", "num_scorers=1", "eval_data.num_examples=4",
        f"run.output_dir={out}", "run.use_wandb=false", "run.eval_every=100", *extra,
    ])


def _uninterrupted_prompts(config: grpo.GRPOConfig) -> tuple[list[float], list[float]]:
    """Per step, the prompt hash and epoch an uninterrupted run logs: step k trains on the k-th
    draw of the seeded prompt stream (`data/prompt_hash` is the recipe's crc32 of the ids)."""
    stream = PromptStream(load_examples(config.train_data, "train_data"), config.run.seed)
    hashes, epochs = [], []
    for _ in range(config.steps):
        ids = [e.id for e in stream.next(config.rollout_batch_size // config.group_size)]
        hashes.append(float(zlib.crc32(",".join(ids).encode()) % 1_000_000))
        epochs.append(stream.epoch)
    return hashes, epochs


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_resume_is_exact(tmp_path, r1_model, ray_local, mode):
    """Stopped after step 1 and resumed: the learner holds the checkpoint's weights bit for bit
    (a resume that loaded none would hold the base model's), and steps 2-3 train on the prompts
    of an uninterrupted run; in async mode too, whose step-2 prompts were drawn before step 1's
    checkpoint."""
    extra = [f"mode={mode}", *(["max_staleness=1"] if mode == "async" else [])]
    stopped = grpo.run(_config(r1_model, tmp_path / "split", "run.stop_after=1", *extra))
    assert stopped["policy/version"] == 1
    assert not (tmp_path / "split" / "final_model").exists()
    resumed_summary = grpo.run(_config(r1_model, tmp_path / "split", "run.resume=true", *extra))

    assert resumed_summary["resume/loaded_checksum"] == resumed_summary["resume/saved_checksum"]
    hashes, epochs = _uninterrupted_prompts(_config(r1_model, tmp_path / "split"))
    resumed = read_metrics(tmp_path / "split" / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [1, 2, 3]
    assert [r["data/prompt_hash"] for r in resumed] == hashes
    logged = [r["data/epoch"] for r in resumed]
    if mode == "sync":
        assert logged == pytest.approx(epochs)
    else:  # the epoch counts the prompts drawn so far: async draws up to max_staleness=1 step ahead
        assert all(epochs[k] - 1e-9 <= logged[k] <= epochs[min(k + 1, 2)] + 1e-9 for k in range(3)), (logged, epochs)
    assert [r["policy/version"] for r in resumed] == [1.0, 2.0, 3.0]
    assert resumed[-1]["data/train_skipped"] == 0.0 and "data/eval_skipped" in resumed_summary
    assert (tmp_path / "split" / "final_model" / "config.json").exists()
    # a checkpoint at the end of every run (checkpoint_every=10 > steps)
    assert latest_checkpoint(str(tmp_path / "split"))[1]["step"] == 3


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
