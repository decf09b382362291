"""Connecting to Ray and reserving resources for a run's actors.

`python jobs/X.py` starts a local Ray instance; under `ray job submit` (RAY_ADDRESS set) the
same call joins the cluster. Every actor of a run is placed in one placement group, so a run
either gets all its engines and learner ranks or waits, and `strategy=SPREAD` puts them on
different nodes.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Literal

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy


def on_gpu_cluster() -> bool:
    return ray.cluster_resources().get("GPU", 0) > 0


def init_ray(address: str | None = None, local_cpus: int | None = None) -> None:
    """Join RAY_ADDRESS / `address` if given (`auto` finds a `ray start` cluster on this
    machine), else start a private local instance.

    Locally, logical CPUs are over-provisioned: each engine and learner pins its own thread
    count, so Ray's CPU accounting must not serialize them on a 2-core machine.
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore::FutureWarning"}}
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=True)
    else:
        cpus = local_cpus or max(16, os.cpu_count() or 1)
        # address="local": never attach to a stray `ray start` cluster by accident
        ray.init(address="local", num_cpus=cpus, runtime_env=env, include_dashboard=True, log_to_driver=True)


@dataclass
class RoleResources:
    count: int
    num_cpus: float
    num_gpus: float


class Placement:
    """One placement group holding a bundle per actor, handed out role by role."""

    def __init__(self, roles: dict[str, RoleResources], strategy: Literal["PACK", "SPREAD", "STRICT_PACK"] = "PACK", timeout_s: float = 600.0) -> None:
        self.offsets: dict[str, int] = {}
        bundles: list[dict[str, float]] = []
        for name, res in roles.items():
            self.offsets[name] = len(bundles)
            for _ in range(res.count):
                bundle = {"CPU": res.num_cpus} if res.num_cpus > 0 else {}
                if res.num_gpus > 0:
                    bundle["GPU"] = res.num_gpus
                bundles.append(bundle or {"CPU": 0.001})
        self.group: PlacementGroup = placement_group(bundles, strategy=strategy)
        ready, _ = ray.wait([self.group.ready()], timeout=timeout_s)
        if not ready:
            raise TimeoutError(f"placement group for {roles} not ready after {timeout_s}s: not enough cluster resources")
        self.roles = roles

    def options(self, role: str, index: int) -> dict:
        if index >= self.roles[role].count:
            raise IndexError(f"role {role} has {self.roles[role].count} bundles, asked for {index}")
        res = self.roles[role]
        return {
            "num_cpus": res.num_cpus if res.num_cpus > 0 else 0.001,
            "num_gpus": res.num_gpus,
            "scheduling_strategy": PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=self.offsets[role] + index),
        }

    def release(self) -> None:
        remove_placement_group(self.group)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def node_address() -> tuple[str, int]:
    """This process's node IP and a free port on it (for process-group rendezvous)."""
    return ray.util.get_node_ip_address(), free_port()
