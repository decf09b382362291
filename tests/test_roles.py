"""A run's declared roles: their plan, a reference sharing learner rank 0's bundle, and on real
Ray actors: roles start at the same time, and a role that fails to start takes every actor
already started and the placement group down with it."""

from __future__ import annotations

import threading
import time

import pytest
import ray

from cdra.runtime.cluster import RoleResources
from cdra.runtime.learner import LearnerConfig
from cdra.runtime.roles import (
    ActorPool,
    FrozenEngines,
    Learners,
    PolicyEngines,
    Reference,
    RuleVerifiers,
    actors_of,
    plan,
    split_bundle,
    start_roles,
)
from cdra.runtime.rollout import EngineConfig


def _run_roles(reference: Reference | None = None) -> list:
    roles = [PolicyEngines(EngineConfig(tensor_parallel_size=2), 2), Learners(LearnerConfig(num_ranks=2, num_cpus_per_rank=2.0)),
             FrozenEngines("frozen_actor", "/models/actor", EngineConfig(), 1), RuleVerifiers("r1_zero", 3)]
    return roles + ([reference] if reference else [])


def test_plan_on_gpu_and_cpu_clusters():
    assert plan(_run_roles(Reference(gpus=0.5)), gpu=True) == {
        "rollout": RoleResources(2, 1.0, 2.0), "learner": RoleResources(2, 2.0, 1.0), "frozen_actor": RoleResources(1, 1.0, 1.0),
        "scorer": RoleResources(3, 0.0, 0.0), "reference": RoleResources(1, 0.0, 0.5)}
    # on CPU nothing asks for a GPU; the reference keeps a token bundle of its own
    on_cpu = plan(_run_roles(Reference()), gpu=False)
    assert {name: r.num_gpus for name, r in on_cpu.items()} == dict.fromkeys(on_cpu, 0.0)
    assert on_cpu["reference"].bundle() == {"CPU": 0.001}
    # placed with the learner, the reference asks for no bundle
    assert "reference" not in plan(_run_roles(Reference(placement="learner", gpus=0.25)), gpu=True)


def test_reference_sharing_rank0_splits_its_bundle():
    rank0, reference = split_bundle({"num_cpus": 2.0, "num_gpus": 1.0, "scheduling_strategy": "bundle-0"}, 0.25)
    assert rank0 == {"num_cpus": 1.0, "num_gpus": 0.75, "scheduling_strategy": "bundle-0"}
    assert reference == {"num_cpus": 1.0, "num_gpus": 0.25, "scheduling_strategy": "bundle-0"}
    rank0, reference = split_bundle({"num_cpus": 0.001, "num_gpus": 0.0}, 0.25)  # CPU cluster: no accelerator to share
    assert rank0 == reference == {"num_cpus": 0.0005, "num_gpus": 0.0}


@pytest.mark.parametrize("roles,message", [
    ([RuleVerifiers("r1_zero", 1), RuleVerifiers("gsm8k", 1)], "duplicated role names ['scorer']"),
    ([PolicyEngines(EngineConfig(), 1)], "PolicyEngines are synced from a Learners role"),
    ([RuleVerifiers("r1_zero", 1), Reference(placement="learner", gpus=0.5)], "placement=learner needs a Learners role"),
    ([Learners(LearnerConfig()), Reference(placement="learner", gpus=1.0)], "gpus must be in (0, 1)"),
])
def test_bad_role_lists_are_named(roles, message):
    with pytest.raises(ValueError) as e:
        plan(roles, gpu=False)
    assert message in str(e.value)


def test_actors_of_a_handle_without_actors_is_an_error():
    class Nothing:
        pass

    with pytest.raises(TypeError, match="neither `workers` nor `actors`"):
        actors_of(Nothing())


@ray.remote
class _Probe:
    def pid(self) -> int:
        import os

        return os.getpid()


class _ProbePool:
    def __init__(self, options: list[dict]) -> None:
        self.workers = [_Probe.options(**o).remote() for o in options]
        ray.get([w.pid.remote() for w in self.workers])


def _settled_free_cpus(timeout_s: float = 60.0) -> float:
    """Free CPUs once an earlier test's actors and placement groups (the Ray instance is shared
    within a test process) have finished releasing theirs: all of them, or failing that, a count
    that held for 3 s. Read too early, the count rises under the test's feet."""
    deadline = time.monotonic() + timeout_s
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        free = ray.available_resources().get("CPU", 0.0)
        if free == pytest.approx(ray.cluster_resources().get("CPU", 0.0)):
            return free
        if free != last:
            last, since = free, time.monotonic()
        elif time.monotonic() - since >= 3.0:
            return free
        time.sleep(0.5)
    return last


def _free_cpus_return_to(total: float, timeout_s: float = 60.0) -> bool:
    """Removing a placement group frees its resources asynchronously: poll until they are back."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU") == pytest.approx(total):
            return True
        time.sleep(0.5)
    return False


def _alive(actor, timeout_s: float = 30.0) -> bool:
    """Whether `actor` still answers `timeout_s` after asking: `ray.kill` is asynchronous, so an
    actor just killed may serve a call or two before its process goes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get(actor.pid.remote(), timeout=timeout_s)
        except ray.exceptions.RayActorError:
            return False
        time.sleep(0.5)
    return True


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_roles_start_together_and_a_failed_start_frees_everything(ray_local):
    total = _settled_free_cpus()
    both_started = threading.Barrier(2, timeout=60)  # passes only if the two builds run at the same time

    def build(options: list[dict]) -> _ProbePool:
        both_started.wait()
        return _ProbePool(options)

    roles = start_roles([ActorPool("judge", 2, build, num_cpus=0.5), ActorPool("other", 1, build, num_cpus=0.5),
                         RuleVerifiers("r1_zero", 1)])
    try:
        assert [len(roles[name].workers) for name in ("judge", "other")] == [2, 1] and len(roles["scorer"].actors) == 1
        assert roles.sync is None  # no learner, nothing to sync
        assert ray.available_resources().get("CPU") == pytest.approx(total - 1.5 - 0.001)
        judges = roles["judge"].workers
    finally:
        roles.close()
    assert not any(_alive(a) for a in judges)
    assert _free_cpus_return_to(total)

    started: list = []

    def build_then_fail(options: list[dict]) -> _ProbePool:
        started.append(_ProbePool(options[:1]).workers[0])  # half-way through starting
        raise RuntimeError("judge engine out of memory")

    def build_slowly(options: list[dict]) -> _ProbePool:
        pool = _ProbePool(options)
        started.extend(pool.workers)
        return pool

    with pytest.raises(RuntimeError, match="role 'judge' failed to start: RuntimeError: judge engine out of memory"):
        start_roles([ActorPool("judge", 2, build_then_fail, num_cpus=0.5), ActorPool("other", 1, build_slowly, num_cpus=0.5)])
    assert len(started) == 2 and not any(_alive(a) for a in started)
    assert _free_cpus_return_to(total)


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_reference_placed_with_learner_rank_0(ray_local):
    from cdra.algos.experience import Sample
    from cdra.models.tiny import build_tiny_model
    from cdra.runtime.reference import ReferenceModel
    from cdra.runtime.roles import PolicyModel

    path = str(build_tiny_model())
    total = _settled_free_cpus()
    roles = start_roles([Learners(LearnerConfig(num_ranks=1, micro_batch_size=2)), Reference(placement="learner", gpus=0.5)],
                        PolicyModel(path, pad_id=0))
    try:
        assert "reference" not in roles.placement.roles  # no bundle of its own: one bundle, rank 0's, holds both
        assert ray.available_resources().get("CPU") == pytest.approx(total - 1.0)
        rank0, reference = roles["learner"].workers[0], roles["reference"]
        assert ray.get(rank0.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id())) == \
            ray.get(reference.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))
        probe = Sample(prompt_ids=[5, 6, 7], response_ids=[8, 9])
        assert ray.get(reference.logprobs.remote([probe]))[0] == pytest.approx(ReferenceModel(path, 0).logprobs([probe])[0], abs=1e-5)
    finally:
        roles.close()
    assert _free_cpus_return_to(total)


def test_the_runs_seed_moves_the_policy_engines_sampling_seed():
    """vLLM on CPU ignores per-request seeds: without this, runs with different `run.seed` drew
    the same rollouts."""
    from cdra.runtime.roles import PolicyModel, seeded
    from cdra.runtime.rollout import EngineConfig

    engine = EngineConfig(seed=3)
    assert seeded(engine, PolicyModel("m", 0, 0)).seed == 3
    assert seeded(engine, PolicyModel("m", 0, 2)).seed == 2003
    assert len({seeded(engine, PolicyModel("m", 0, s)).seed for s in range(5)}) == 5
