"""Shared fixtures: the shipped zoo checkpoints and Ray hygiene."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Every Ray instance the tests start is a loopback test cluster. One process must keep one auth
# mode: Ray reads it once, so a test that disabled it for its own cluster would leave later
# clusters of the same process unreachable ("InvalidAuthToken").
os.environ["RAY_AUTH_MODE"] = "disabled"


@pytest.fixture(scope="session")
def r1_model() -> str:
    """The GRPO policy of the embedded default (zoo checkpoint ``r1``)."""
    from cdra.models.zoo import checkpoint_path

    return checkpoint_path("r1")


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance in this process. It stays up for later tests of the same process,
    which then skip `ray.init`'s seconds (Ray shuts it down at exit); a test that needs none
    asks for `no_ray`."""
    from cdra.runtime.cluster import init_ray

    init_ray()


@pytest.fixture
def no_ray():
    """No Ray instance in this process: an earlier test's may still be up."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
