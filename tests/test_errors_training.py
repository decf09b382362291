"""Training guards on a real 1-rank DeepSpeed learner (Ray actor): a non-finite loss stops the
update with a message naming the optimizer step and leaves the weights as they were; with
`nonfinite=skip` the step runs and counts the skipped micro-batches."""

from __future__ import annotations

import math

import pytest
import ray

from cdra.algos.experience import Sample
from cdra.runtime.groups import LearnerGroup
from cdra.runtime.learner import LearnerConfig
from cdra.runtime.objectives import Objective

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_model() -> str:
    from cdra.models.tiny import build_tiny_model

    return str(build_tiny_model())


def _samples(n: int = 4) -> list[Sample]:
    return [Sample(prompt_ids=[5 + i, 6, 7, 8], response_ids=[9, 10 + i, 11], prompt_id=f"p{i}") for i in range(n)]


def _learner(model: str, **overrides) -> LearnerGroup:
    config = LearnerConfig(model_path=model, num_ranks=1, micro_batch_size=2, zero_stage=0, **overrides)
    return LearnerGroup(config, pad_id=0)


def _checksum(group: LearnerGroup) -> float:
    return group.call_all("state_checksum")[0]


def _close(group: LearnerGroup) -> None:
    for w in group.workers:
        ray.kill(w)


def test_huge_lr_stops_the_run_naming_the_optimizer_step(tiny_model, ray_local):
    group = _learner(tiny_model, lr=1e30)
    try:
        sft = Objective(kind="sft")
        # weights move by ~1e30 per update: finite at first, non-finite within a few updates
        with pytest.raises(ray.exceptions.RayTaskError, match=r"non-finite (loss|weights after the update) at optimizer step [23]\b"):
            for _ in range(3):
                group.train(_samples(), sft)
    finally:
        _close(group)


PG = Objective(kind="policy_gradient", loss_type="reinforce_with_baseline")


def _nan_advantage_samples() -> list[Sample]:
    samples = _samples()
    for s in samples:
        s.advantage = float("nan")
    return samples


def test_non_finite_loss_raises_before_the_update(tiny_model, ray_local):
    group = _learner(tiny_model, lr=1e-3)
    try:
        before = _checksum(group)
        with pytest.raises(ray.exceptions.RayTaskError, match=r"non-finite loss at optimizer step 1 .*no weights changed"):
            group.train(_nan_advantage_samples(), PG)
        assert _checksum(group) == before  # bit for bit: the failed step applied nothing
    finally:
        _close(group)


def test_skip_mode_counts_the_skipped_micro_batches(tiny_model, ray_local):
    group = _learner(tiny_model, lr=1e-3, nonfinite="skip")
    try:
        before = _checksum(group)
        metrics = group.train(_nan_advantage_samples(), PG)  # 4 samples, micro-batches of 2: both non-finite
        assert metrics["learner/nonfinite_skipped"] == 2.0
        assert _checksum(group) == before  # zero gradients into a fresh AdamW: no move
        ok = _samples()
        for s in ok:
            s.advantage = 1.0
        metrics = group.train(ok, PG)
        assert metrics["learner/nonfinite_skipped"] == 0.0 and math.isfinite(metrics["learner/loss"])
        assert _checksum(group) != before
    finally:
        _close(group)
