"""A job's placement plan against the cluster's resources: fitted where CPUs are short, refused at
once (naming what it needs and what there is) where GPUs or custom resources are. The same
against a real `ray start` head, and a placement that stays pending: test_ray_job_submit.py."""

from __future__ import annotations

import pytest

from cdra.runtime.cluster import PlacementError, RoleResources, fit_plan


def _session_roles(engines: int, ranks: int, scorers: int, gpu: float = 0.0) -> dict[str, RoleResources]:
    return {"rollout": RoleResources(engines, 1.0, gpu), "learner": RoleResources(ranks, 1.0, gpu), "scorer": RoleResources(scorers, 0.0, 0.0)}


def test_plan_that_fits_is_left_alone():
    roles = _session_roles(2, 2, 2)
    assert fit_plan(roles, [{"CPU": 16.0, "memory": 1e10}]) == (roles, None)


def test_cpu_short_plan_gets_token_claims():
    # Critique-RL's session on a 2-core head: 1 + 1 CPU + two 0.001 scorers = 2.002 > 2
    fitted, note = fit_plan(_session_roles(1, 1, 2), [{"CPU": 2.0}])
    assert {name: r.num_cpus for name, r in fitted.items()} == {"rollout": 0.001, "learner": 0.001, "scorer": 0.0}
    assert note.startswith("placement plan asks 2.002 CPUs, cluster has 2: each actor claims 0.001 CPU")
    # the frozen actor engines' own group (1 CPU) still fits beside the fitted session (0.004)
    assert fit_plan({"rollout": RoleResources(1, 1.0, 0.0)}, [{"CPU": 2.0 - 0.004}])[1] is None


def test_missing_gpus_are_named():
    with pytest.raises(PlacementError) as e:
        fit_plan(_session_roles(8, 2, 2, gpu=1.0), [{"CPU": 2.0}])
    assert str(e.value) == ("placement plan needs {CPU: 10.002, GPU: 10} (rollout 8 x {CPU: 1, GPU: 1}, learner 2 x {CPU: 1, GPU: 1}, "
                            "scorer 2 x {CPU: 0.001}); cluster has {CPU: 2, GPU: 0}: not enough GPU")


def test_missing_custom_resource_is_named():
    roles = {"rollout": RoleResources(1, 1.0, 0.0, {"accelerator_type:H100": 1.0})}
    with pytest.raises(PlacementError, match=r"cluster has \{CPU: 4, accelerator_type:H100: 0\}: not enough accelerator_type:H100"):
        fit_plan(roles, [{"CPU": 4.0}])


def test_bundle_larger_than_any_node_is_named():
    nodes = [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 1.0}]
    assert fit_plan({"rollout": RoleResources(2, 1.0, 1.0)}, nodes)[1] is None  # one per node
    with pytest.raises(PlacementError, match=r"no node fits one rollout actor \{CPU: 1, GPU: 2\}"):
        fit_plan({"rollout": RoleResources(1, 1.0, 2.0)}, nodes)
