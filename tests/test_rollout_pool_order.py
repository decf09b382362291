"""Which engine samples which chunk (`RolloutPool._engine_for`): each chunk its own engine, round
robin, so a seed's samples repeat run to run; another engine only while its own is down. Pure
logic on a pool object without actors."""

from __future__ import annotations

from cdra.runtime.groups import RolloutJob, RolloutPool
from cdra.runtime.rollout import SamplingConfig


def _pool(workers: int, down: set[int] = frozenset()) -> RolloutPool:
    pool = object.__new__(RolloutPool)  # no Ray actors: only the assignment logic is used
    pool.workers, pool.chunks_per_worker, pool.down = [object()] * workers, 2, set(down)
    return pool


def _job(pool: RolloutPool, prompts: int) -> RolloutJob:
    pool.recover = lambda: None  # nothing to bring back
    return pool._job([[i] for i in range(prompts)], SamplingConfig(), 1)


def test_chunks_get_their_engines_round_robin():
    job = _job(_pool(2), 8)
    assert [start for start, _ in job.queue] == [0, 2, 4, 6]
    assert job.home == {0: 0, 2: 1, 4: 0, 6: 1}


def test_a_chunk_waits_for_its_own_engine_while_that_engine_is_up():
    pool = _pool(2)
    job = _job(pool, 8)
    assert pool._engine_for(job, 0, idle=[0, 1]) == 0
    assert pool._engine_for(job, 2, idle=[0, 1]) == 1
    assert pool._engine_for(job, 2, idle=[0]) is None  # engine 1 is busy: wait for it, not engine 0


def test_a_chunk_of_a_down_engine_goes_to_an_idle_one():
    pool = _pool(2)
    job = _job(pool, 8)
    pool.down = {1}
    assert pool._engine_for(job, 2, idle=[0]) == 0
    assert pool._engine_for(job, 2, idle=[]) is None
