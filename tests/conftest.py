"""Shared fixtures: cached tiny models (built once per machine, keyed by config) and Ray hygiene."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def r1_model() -> str:
    """The warm-started GRPO policy of the embedded default."""
    from cdra.models.warmstart import WarmStartConfig, warm_start

    return str(warm_start(WarmStartConfig(task="r1")))


@pytest.fixture(scope="module", autouse=False)
def ray_local():
    """A local Ray instance for one test module, shut down afterwards."""
    import ray

    from cdra.runtime.cluster import init_ray

    init_ray()
    yield
    ray.shutdown()
