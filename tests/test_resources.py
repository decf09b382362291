"""A job's placement plan against the cluster it runs on: fitted where CPUs are short, refused at
once (naming what it needs and what there is) where GPUs or custom resources are, and a
placement that stays pending fails after its time limit instead of waiting forever."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cdra.runtime.cluster import PlacementError, RoleResources, fit_plan

REPO = Path(__file__).resolve().parents[1]


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


# ----------------------------------------------------------------------------- on a real `ray start` head


_PROBE = textwrap.dedent("""
    import json, sys, time
    import ray
    from ray.util.placement_group import placement_group
    from cdra.runtime.cluster import Placement, PlacementError, RoleResources
    ray.init(address=sys.argv[1])
    out = {}
    def attempt(name, roles, **kw):
        started = time.perf_counter()
        try:
            Placement(roles, **kw).release()
            out[name] = {"ok": True}
        except PlacementError as e:
            out[name] = {"ok": False, "error": str(e)}
        out[name]["seconds"] = time.perf_counter() - started
    session = {"rollout": RoleResources(1, 1.0, 0.0), "learner": RoleResources(1, 1.0, 0.0), "scorer": RoleResources(2, 0.0, 0.0)}
    first = Placement(session)                       # Critique-RL's session group: fitted
    attempt("frozen_beside_session", {"rollout": RoleResources(1, 1.0, 0.0)})  # its frozen engines
    first.release()
    attempt("gpus", {"rollout": RoleResources(8, 1.0, 1.0)})
    attempt("custom", {"rollout": RoleResources(1, 1.0, 0.0, {"cdra_absent": 1.0})})
    hog = placement_group([{"CPU": ray.cluster_resources()["CPU"]}]); ray.get(hog.ready())  # every CPU held
    attempt("pending", {"learner": RoleResources(1, 1.0, 0.0)}, timeout_s=5)
    print("PROBE " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def tiny_model_path() -> str:
    from cdra.models.tiny import build_tiny_model

    return str(build_tiny_model())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_head(env: dict[str, str]) -> tuple[subprocess.Popen, int, int]:
    bin_dir = Path(sys.executable).parent
    gcs, dash = _free_port(), _free_port()
    cmd = [str(bin_dir / "ray"), "start", "--head", f"--port={gcs}", f"--dashboard-port={dash}",
           # never the default 52365: a second head on this machine would lose its job agent
           f"--dashboard-agent-listen-port={_free_port()}",
           "--dashboard-host=127.0.0.1", f"--num-cpus={os.cpu_count()}", "--disable-usage-stats", "--block",
           f"--temp-dir=/tmp/cdra-ray-{gcs}"]
    head = subprocess.Popen(cmd, env=env, start_new_session=True)  # its own process group: ended alone below
    return head, gcs, dash


def _stop_head(head: subprocess.Popen) -> None:
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)


def _wait_for_gcs(address: str, env: dict[str, str], timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        probe = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address={address!r}); print(ray.cluster_resources())"],
                               env=env, capture_output=True, text=True, timeout=120)
        if probe.returncode == 0 and "CPU" in probe.stdout:
            return
        time.sleep(2)
    raise TimeoutError(f"ray head at {address} did not come up")


@pytest.mark.integration
@pytest.mark.exclusive
@pytest.mark.timeout(1200)
def test_plans_on_a_head_with_the_real_cpu_count(tmp_path, tiny_model_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"  # a loopback-only test cluster; no token to hand around
    env["PYTHONPATH"] = str(REPO)
    head, gcs, dash = _start_head(env)
    try:
        address = f"127.0.0.1:{gcs}"
        _wait_for_gcs(address, env)
        probe = subprocess.run([sys.executable, "-c", _PROBE, address], env=env, capture_output=True, text=True, timeout=300)
        assert probe.returncode == 0, probe.stdout[-2000:] + probe.stderr[-3000:]
        out = json.loads(probe.stdout.split("PROBE ", 1)[1])
        assert out["frozen_beside_session"]["ok"], out
        cpus = os.cpu_count()
        for name, asked in (("gpus", "GPU: 8"), ("custom", "cdra_absent: 1")):
            assert not out[name]["ok"] and out[name]["seconds"] < 60, out[name]
            assert asked in out[name]["error"] and f"cluster has {{CPU: {cpus}" in out[name]["error"], out[name]
        assert not out["pending"]["ok"] and "still pending after 5s" in out["pending"]["error"], out["pending"]
        assert 5 <= out["pending"]["seconds"] < 60

        # the main job's default plan (2 engines + 2 learner ranks = 4 CPUs) on this machine's head,
        # run to its first step through `ray job submit`
        run_dir = tmp_path / "job"
        submit = [str(Path(sys.executable).parent / "ray"), "job", "submit", f"--address=http://127.0.0.1:{dash}",
                  "--",
                  sys.executable, str(REPO / "jobs" / "grpo.py"), f"model_path={tiny_model_path}", "steps=1",
                  "rollout_batch_size=8", "group_size=4", "train_batch_size=8", "num_scorers=1", "eval_data.num_examples=2",
                  "eval_samples=0", "sampling.max_tokens=16", "rollout.max_model_len=256", "learner.micro_batch_size=8",
                  f"run.output_dir={run_dir}", "run.use_wandb=false"]
        for _ in range(60):  # the head's job agent comes up some seconds after the GCS
            result = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=900)
            log = result.stdout + result.stderr
            if "No available agent to submit job" not in log:
                break
            time.sleep(3)
        assert result.returncode == 0, log[-4000:]
        assert f"placement plan asks 4.001 CPUs, cluster has {cpus}" in log or cpus >= 5
        assert json.loads((run_dir / "summary.json").read_text())["policy/version"] == 1.0
    finally:
        _stop_head(head)
