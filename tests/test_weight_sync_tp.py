"""Tensor-parallel rollout engines: config validation, GPUs per engine, ranks in the sync group."""

from __future__ import annotations

import pytest

from cdra.runtime.rollout import EngineConfig
from cdra.runtime.weight_sync import sync_ranks


def test_tensor_parallel_size_is_validated():
    EngineConfig(tensor_parallel_size=4).validate()
    with pytest.raises(ValueError, match="tensor_parallel_size must be >= 1, got 0"):
        EngineConfig(tensor_parallel_size=0).validate()


def test_an_engine_reserves_its_tensor_parallel_gpus():
    assert EngineConfig(tensor_parallel_size=4).gpus_per_engine(on_gpu=True) == 4.0
    assert EngineConfig().gpus_per_engine(on_gpu=True) == 1.0
    assert EngineConfig(tensor_parallel_size=4).gpus_per_engine(on_gpu=False) == 0.0


def test_each_tensor_parallel_worker_gets_a_sync_rank():
    # learner = rank 0; engines of TP 1, 2, 4 take ranks 1, 2-3, 4-7
    assert sync_ranks([1, 2, 4]) == ([1, 2, 4], 8)
    assert sync_ranks([1, 1]) == ([1, 2], 3)  # the plain case: world = 1 + engines
    with pytest.raises(ValueError, match="at least one sync rank"):
        sync_ranks([1, 0])
