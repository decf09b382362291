"""What a running session's actors listen on, and the check that cdra's own listeners (weight-sync
store and gloo pairs, the learner group's rendezvous) of a single-machine run are on loopback;
test_spine.py runs it on its session, test_listeners.py uses `listening`."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import psutil
import ray

from cdra.runtime.cluster import LOOPBACK


def listening(pid: int) -> set[tuple[str, int]]:
    return {(c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


def _ray_listeners() -> dict[str, set[tuple[str, int]]]:
    """Listeners of this Ray instance's own processes (found by its GCS port on their command line)."""
    port = ray.get_runtime_context().gcs_address.rsplit(":", 1)[1]
    found: dict[str, set[tuple[str, int]]] = {}
    for proc in psutil.process_iter(["cmdline", "name"]):
        try:
            if any(port in arg for arg in proc.info["cmdline"] or []):
                found[f"{proc.info['name']} {proc.pid}"] = listening(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _is_loopback(ip: str) -> bool:
    return ipaddress.ip_address(ip.removeprefix("::ffff:")).is_loopback


@dataclass
class RunListeners:
    listeners: dict[str, set[tuple[str, int]]]  # by role: every listening (ip, port) of its process
    ray_ports: dict[str, int]  # by role: Ray's own core-worker port in that process
    session_addresses: list[tuple[str, int]]  # the DeepSpeed rendezvous store, the weight-sync store


def run_listeners(session) -> RunListeners:
    """What the rollout workers and learner ranks of a running session (after one weight push,
    when the sync group's pairs are connected) listen on. test_spine.py asserts it on its run."""
    actors = {f"rollout {i}": w for i, w in enumerate(session.rollouts.workers)}
    actors.update({f"learner rank {r}": w for r, w in enumerate(session.learners.workers)})
    listeners, ray_ports = {}, {}
    for role, actor in actors.items():
        # Ray's debugging actor table: the actor's process and its core-worker gRPC port
        info = ray._private.state.actors(actor._actor_id.hex())
        listeners[role] = listening(info["Pid"])
        ray_ports[role] = info["Address"]["Port"]
    return RunListeners(listeners, ray_ports, [session.learners.rendezvous, session.sync.rendezvous])


def assert_run_listeners_on_loopback(found: RunListeners) -> None:
    """Besides Ray's own core-worker port, every listener of the run's actors is cdra's and on
    loopback: the two rendezvous stores in learner rank 0, the gloo pairs of the DeepSpeed group
    (learners) and of the weight-sync group (all)."""
    ray_own = {role: {a for a in addrs if a[1] == found.ray_ports[role]} for role, addrs in found.listeners.items()}
    ours = {role: addrs - ray_own[role] for role, addrs in found.listeners.items()}
    print(f"Ray's core-worker listener in each actor: {ray_own}\nRay's own processes: {_ray_listeners()}")
    rank0 = ours["learner rank 0"]
    for address in found.session_addresses:
        assert address[0] == LOOPBACK and address in rank0, (address, rank0)
    assert all(ours.values()), ours
    wild = {role: sorted(a for a in addrs if not _is_loopback(a[0])) for role, addrs in ours.items()}
    assert not any(wild.values()), f"listeners off loopback: {wild}"
