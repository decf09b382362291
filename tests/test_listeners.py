"""The project's own listeners (weight-sync store and gloo pairs, the learner group's rendezvous)
of a single-machine run bind to loopback, never to all interfaces."""

from __future__ import annotations

import datetime
import ipaddress

import psutil
import pytest
import ray

from cdra.runtime.cluster import LOOPBACK, bound_store, free_port, local_address_towards


def _listening(pid: int) -> set[tuple[str, int]]:
    return {(c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


def _ray_listeners() -> dict[str, set[tuple[str, int]]]:
    """Listeners of this Ray instance's own processes (found by its GCS port on their command line)."""
    port = ray.get_runtime_context().gcs_address.rsplit(":", 1)[1]
    found: dict[str, set[tuple[str, int]]] = {}
    for proc in psutil.process_iter(["cmdline", "name"]):
        try:
            if any(port in arg for arg in proc.info["cmdline"] or []):
                found[f"{proc.info['name']} {proc.pid}"] = _listening(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _is_loopback(ip: str) -> bool:
    return ipaddress.ip_address(ip.removeprefix("::ffff:")).is_loopback


def test_bound_store_listens_on_the_given_host_only():
    port = free_port()
    store = bound_store(LOOPBACK, port, 1, True, datetime.timedelta(seconds=10))
    store.set("k", "v")
    assert store.get("k") == b"v"
    assert (LOOPBACK, port) in _listening(psutil.Process().pid)
    assert not [a for a in _listening(psutil.Process().pid) if a[1] == port and a[0] != LOOPBACK]


def test_local_address_towards_loopback_is_loopback():
    assert local_address_towards("127.0.0.1") == LOOPBACK
    assert local_address_towards("localhost") == LOOPBACK


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_run_listeners_are_on_loopback(tmp_path, ray_local, capsys):
    from cdra.config import load_config
    from cdra.models.tiny import build_tiny_model
    from cdra.recipes import grpo

    config = load_config(grpo.GRPOConfig, [
        f"model_path={build_tiny_model()}", "steps=1", "rollout_batch_size=8", "group_size=4", "train_batch_size=8",
        "num_rollout_workers=1", "learner.num_ranks=2", "learner.micro_batch_size=8", "num_scorers=1",
        "eval_data.num_examples=2", "eval_samples=0", "sampling.max_tokens=16", "rollout.max_model_len=256",
        f"run.output_dir={tmp_path / 'run'}", "run.use_wandb=false",
    ])
    session = grpo.start_session(config)
    try:
        grpo.train(session, config)  # one weight push: the sync group's pairs are connected
        actors = {f"rollout {i}": w for i, w in enumerate(session.rollouts.workers)}
        actors.update({f"learner rank {r}": w for r, w in enumerate(session.learners.workers)})
        listeners, ray_ports = {}, {}
        for role, actor in actors.items():
            # Ray's debugging actor table: the actor's process and its core-worker gRPC port
            info = ray._private.state.actors(actor._actor_id.hex())
            listeners[role] = _listening(info["Pid"])
            ray_ports[role] = info["Address"]["Port"]
        session_addresses = [session.learners.rendezvous, session.sync.rendezvous]
    finally:
        session.close()
    ray_own = {role: {a for a in addrs if a[1] == ray_ports[role]} for role, addrs in listeners.items()}
    ours = {role: addrs - ray_own[role] for role, addrs in listeners.items()}
    with capsys.disabled():
        print(f"\nRay's core-worker listener in each actor: {ray_own}")
        print(f"Ray's own processes: {_ray_listeners()}")
    rank0 = ours["learner rank 0"]
    for address in session_addresses:  # the DeepSpeed rendezvous store, the weight-sync store
        assert address[0] == LOOPBACK and address in rank0, (address, rank0)
    # besides those stores: gloo pairs of the DeepSpeed group (learners) and the weight-sync group (all)
    assert all(ours.values()), ours
    wild = {role: sorted(a for a in addrs if not _is_loopback(a[0])) for role, addrs in ours.items()}
    assert not any(wild.values()), f"listeners off loopback: {wild}"
