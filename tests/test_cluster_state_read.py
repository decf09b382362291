"""`read_cluster_state`: a cluster-state read that never answers is abandoned after its deadline,
the driver's GCS accessor is dropped so that the retry connects a fresh one, and a read that
raises, or never answers twice, ends in an error (pure logic: the reads are plain functions)."""

from __future__ import annotations

import threading
import time

import pytest
from ray._private import state

from cdra.runtime.cluster import read_cluster_state


@pytest.fixture
def stale_accessor():
    saved = state.state._global_state_accessor
    marker = object()
    state.state._global_state_accessor = marker
    yield marker
    state.state._global_state_accessor = saved


def test_a_read_stuck_once_is_retried_on_a_fresh_accessor(stale_accessor):
    never = threading.Event()
    calls: list[object] = []

    def read() -> dict[str, float]:
        calls.append(state.state._global_state_accessor)
        if len(calls) == 1:
            never.wait()  # the lost reply: this thread is left behind
        return {"CPU": 2.0}

    started = time.perf_counter()
    assert read_cluster_state(read, "cluster_resources", timeout_s=0.2) == {"CPU": 2.0}
    assert 0.2 <= time.perf_counter() - started < 5.0
    assert calls == [stale_accessor, None]  # the retry found the accessor dropped


def test_an_answer_in_time_keeps_the_accessor(stale_accessor):
    assert read_cluster_state(lambda: [1, 2], "nodes", timeout_s=5.0) == [1, 2]
    assert state.state._global_state_accessor is stale_accessor


def test_a_read_that_raises_raises_in_the_caller(stale_accessor):
    def read() -> None:
        raise ConnectionError("gcs gone")

    with pytest.raises(ConnectionError, match="gcs gone"):
        read_cluster_state(read, "nodes", timeout_s=5.0)


def test_a_read_that_never_answers_is_one_error_naming_it(stale_accessor):
    never = threading.Event()
    with pytest.raises(RuntimeError, match=r"did not answer nodes within 0.1s, twice"):
        read_cluster_state(never.wait, "nodes", timeout_s=0.1)
