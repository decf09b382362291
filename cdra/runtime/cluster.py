"""Connecting to Ray, reserving resources for a run's actors, and choosing listen addresses.

`python jobs/X.py` starts a local Ray instance; under `ray job submit` (RAY_ADDRESS set) the
same call joins the cluster. Every actor of a run is placed in one placement group (its roles,
`cdra.runtime.roles`), so a run
either gets all its engines and learner ranks or fails with what it needs and what there is;
`strategy=SPREAD` puts them on different nodes.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal, TypeVar

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

LOOPBACK = "127.0.0.1"
_MIN_CPU = 0.001  # a bundle must hold some resource; Ray's resource granularity is 1e-4


T = TypeVar("T")


def read_cluster_state(read: Callable[[], T], what: str, timeout_s: float = 60.0) -> T:
    """`read()` (`ray.nodes`, `ray.cluster_resources`, ...), with a deadline.

    These reads go through one GCS accessor per driver process, which waits for each reply
    without a deadline; a long-lived driver (a test process after a hundred runs) was seen
    blocked in one for good while the GCS answered every other client at once. So the read
    runs in a helper thread; past `timeout_s` the accessor is dropped (the next read connects
    a fresh one) and the read is tried once more before giving up with a one-line error."""
    for _ in range(2):
        box = _read_in_thread(read, what, timeout_s)
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        if "value" in box:
            return box["value"]  # type: ignore[return-value]
        _drop_state_accessor()
    raise RuntimeError(f"Ray's cluster state did not answer {what} within {timeout_s:g}s, twice (is the GCS up?)")


def _read_in_thread(read: Callable[[], object], what: str, timeout_s: float) -> dict[str, object]:
    """{"value": ...} or {"error": ...} once `read` returns or raises; {} if it is still waiting."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = read()
        except BaseException as err:  # handed to the caller's thread
            box["error"] = err

    # a daemon thread, not a ThreadPoolExecutor: an executor joins its threads at exit, so a read
    # that never answers would hang the process's exit instead of its start-up
    thread = threading.Thread(target=run, name=f"cdra-read-{what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return box


def _drop_state_accessor() -> None:
    from ray._private import state

    with state.state._init_lock:
        state.state._global_state_accessor = None


def on_gpu_cluster() -> bool:
    return read_cluster_state(ray.cluster_resources, "cluster_resources").get("GPU", 0) > 0


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
        # address="local": never attach to a stray `ray start` cluster by accident; the
        # dashboard (and its job-submission API) on loopback only
        ray.init(address="local", num_cpus=cpus, runtime_env=env, include_dashboard=True,
                 dashboard_host=LOOPBACK, log_to_driver=True)


# ----------------------------------------------------------------------------- placement


class PlacementError(RuntimeError):
    """The run's placement plan cannot be (or was not) satisfied by the cluster."""


@dataclass
class RoleResources:
    count: int
    num_cpus: float
    num_gpus: float
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per actor

    def bundle(self) -> dict[str, float]:
        b = {"CPU": self.num_cpus} if self.num_cpus > 0 else {}
        if self.num_gpus > 0:
            b["GPU"] = self.num_gpus
        b.update({k: v for k, v in self.resources.items() if v > 0})
        return b or {"CPU": _MIN_CPU}


def plan_totals(roles: dict[str, RoleResources]) -> dict[str, float]:
    total: dict[str, float] = {}
    for res in roles.values():
        for k, v in res.bundle().items():
            total[k] = total.get(k, 0.0) + v * res.count
    return total


def describe_plan(roles: dict[str, RoleResources]) -> str:
    parts = ", ".join(f"{name} {res.count} x {_fmt(res.bundle())}" for name, res in roles.items() if res.count)
    return f"{_fmt(plan_totals(roles))} ({parts})"


def _fmt(resources: dict[str, float]) -> str:
    shown = {k: round(v, 4) for k, v in sorted(resources.items()) if not k.startswith(("node:", "memory", "object_store_memory"))}
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in shown.items()) + "}"


def fit_plan(roles: dict[str, RoleResources], nodes: list[dict[str, float]]) -> tuple[dict[str, RoleResources], str | None]:
    """The plan, with CPU claims reduced to a token when the cluster has fewer CPUs than it asks.

    CPUs are logical for cdra's actors (each engine and learner pins its own thread count), so
    on a 2-core machine 2 engines and 2 learner ranks can share the cores. A token claim, not a
    proportional share, leaves room for other placement groups on the same cluster (another
    job's, or one a test or tool places beside a run). GPUs and custom resources are physical
    and never reduced. `nodes` holds each alive node's total resources. Returns (fitted roles, a note on
    what was changed or None); raises PlacementError naming what the plan needs and what the
    cluster has when it cannot fit.
    """
    need = plan_totals(roles)
    have = {**{k: 0.0 for k in need}, **_sum(nodes)}  # name what is asked even where the cluster has none
    short = {k for k, v in need.items() if k != "CPU" and v > have[k] + 1e-9}
    if short:
        raise PlacementError(f"placement plan needs {describe_plan(roles)}; cluster has {_fmt(have)}: not enough {', '.join(sorted(short))}")
    fitted, note = dict(roles), None
    if need.get("CPU", 0.0) > have["CPU"] + 1e-9:
        fitted = {name: replace(r, num_cpus=_MIN_CPU) if r.num_cpus > 0 else r for name, r in roles.items()}
        if plan_totals(fitted).get("CPU", 0.0) > have["CPU"] + 1e-9:
            raise PlacementError(f"placement plan needs {describe_plan(roles)}; cluster has {_fmt(have)}: not enough CPU")
        note = (f"placement plan asks {need['CPU']:g} CPUs, cluster has {have['CPU']:g}: each actor claims {_MIN_CPU} CPU instead "
                f"(engines and learners pin their own threads; the cores are shared)")
    for name, res in fitted.items():
        bundle = res.bundle()
        if res.count and not any(all(node.get(k, 0.0) + 1e-9 >= v for k, v in bundle.items()) for node in nodes):
            raise PlacementError(f"placement plan needs {describe_plan(fitted)}; no node fits one {name} actor {_fmt(bundle)}; "
                                 f"nodes have {', '.join(_fmt(n) for n in nodes) or 'nothing'}")
    return fitted, note


def _sum(nodes: list[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for node in nodes:
        for k, v in node.items():
            total[k] = total.get(k, 0.0) + v
    return total


def alive_node_resources() -> list[dict[str, float]]:
    return [dict(n["Resources"]) for n in read_cluster_state(ray.nodes, "nodes") if n.get("Alive")]


class Placement:
    """One placement group holding a bundle per actor, handed out role by role.

    The plan is checked against the cluster first (fitted where CPUs are short, refused at once
    where GPUs or custom resources are), and a group still pending after `timeout_s` (resources
    held by other jobs) is removed and reported instead of waited on forever.
    """

    def __init__(self, roles: dict[str, RoleResources], strategy: Literal["PACK", "SPREAD", "STRICT_PACK"] = "PACK", timeout_s: float = 300.0) -> None:
        nodes = alive_node_resources()
        self.roles, note = fit_plan(roles, nodes)
        if note:
            if strategy == "PACK" and len(nodes) > 1:
                strategy = "SPREAD"  # token claims would otherwise all pack onto one node
            print(f"[cdra] {note}")
        self.offsets: dict[str, int] = {}
        bundles: list[dict[str, float]] = []
        for name, res in self.roles.items():
            self.offsets[name] = len(bundles)
            bundles += [res.bundle() for _ in range(res.count)]
        self.group: PlacementGroup = placement_group(bundles, strategy=strategy)
        ready, _ = ray.wait([self.group.ready()], timeout=timeout_s)
        if not ready:
            remove_placement_group(self.group)
            raise PlacementError(f"placement plan {describe_plan(self.roles)} still pending after {timeout_s:g}s; "
                                 f"cluster has {_fmt(read_cluster_state(ray.cluster_resources, 'cluster_resources'))}, "
                                 f"free now {_fmt(read_cluster_state(ray.available_resources, 'available_resources'))}")

    def options(self, role: str, index: int) -> dict:
        if index >= self.roles[role].count:
            raise IndexError(f"role {role} has {self.roles[role].count} bundles, asked for {index}")
        res = self.roles[role]
        return {
            "num_cpus": res.num_cpus if res.num_cpus > 0 else (_MIN_CPU if "CPU" in res.bundle() else 0),
            "num_gpus": res.num_gpus,
            "resources": {k: v for k, v in res.resources.items() if v > 0},
            "scheduling_strategy": PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=self.offsets[role] + index),
        }

    def release(self) -> None:
        remove_placement_group(self.group)


# ----------------------------------------------------------------------------- listen addresses


def single_node() -> bool:
    return sum(1 for n in read_cluster_state(ray.nodes, "nodes") if n.get("Alive")) <= 1


def listen_address() -> str:
    """Where this process's rendezvous listeners bind: loopback when the whole cluster is this
    one machine, else this node's own address (never all interfaces)."""
    return LOOPBACK if single_node() else ray.util.get_node_ip_address()


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def node_address() -> tuple[str, int]:
    """This process's listen address and a free port on it (for process-group rendezvous)."""
    host = listen_address()
    return host, free_port(host)


def local_address_towards(peer: str) -> str:
    """The address of this host on the route to `peer` (loopback for a loopback peer)."""
    if ipaddress.ip_address(socket.gethostbyname(peer)).is_loopback:
        return LOOPBACK
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((peer, 9))  # a UDP connect sends nothing; it only picks the route
        return s.getsockname()[0]


def bound_store(host: str, port: int, world_size: int, is_master: bool, timeout: datetime.timedelta):
    """A torch TCPStore whose server (on the master) listens on `host` only.

    TCPStore's own server binds every interface; handing it a socket bound here keeps it to
    the address the clients were given.
    """
    import torch.distributed as dist

    if not is_master:
        return dist.TCPStore(host, port, world_size, False, timeout)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(128)
    return dist.TCPStore(host, port, world_size, True, timeout, master_listen_fd=listener.detach())


def gloo_interface(host: str) -> str | None:
    """The network interface holding `host` (for GLOO_SOCKET_IFNAME), or None."""
    import psutil

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == host for a in addrs):
            return name
    return None
