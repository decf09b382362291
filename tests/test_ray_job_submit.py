"""The README's lines on this machine: `ray start --head` (no --num-cpus: the machine's real CPU
count) and `ray job submit --working-dir . -- python jobs/critique_rl.py`; and placement plans
against that head: fitted where CPUs are short, refused at once where GPUs or custom resources
are, failed after their time limit where they stay pending. One head serves the module."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(900), pytest.mark.integration, pytest.mark.exclusive]
REPO = Path(__file__).resolve().parents[1]

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_gcs(address: str, env: dict[str, str], timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        probe = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address={address!r}); print(ray.cluster_resources())"],
                               env=env, capture_output=True, text=True, timeout=120)
        if probe.returncode == 0 and "CPU" in probe.stdout:
            return
        time.sleep(2)
    raise TimeoutError(f"ray head at {address} did not come up")


@pytest.fixture(scope="module")
def head():
    """`ray start --head` with the machine's real CPU count, in its own process group (ended alone
    at the end: `ray stop` would also stop every other Ray instance on the machine); yields the
    environment to talk to it with, its GCS address and its dashboard port."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"  # a loopback-only test cluster; no token to hand around
    env["PYTHONPATH"] = str(REPO)  # the job imports this checkout's cdra, not an installed one
    gcs, dash = _free_port(), _free_port()
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={gcs}", f"--dashboard-port={dash}",
           # never the default 52365: a second head on this machine would lose its job agent
           f"--dashboard-agent-listen-port={_free_port()}",
           "--dashboard-host=127.0.0.1", f"--num-cpus={os.cpu_count()}", "--disable-usage-stats", "--block",
           f"--temp-dir=/tmp/cdra-ray-{gcs}"]  # own session dir: later tests never find this cluster
    process = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        _wait_for_gcs(f"127.0.0.1:{gcs}", env)
        yield env, f"127.0.0.1:{gcs}", dash
    finally:
        # SIGKILL: every process of this head is in the group, and a throwaway test cluster has
        # nothing to flush (SIGTERM takes ~30 s of orderly shutdown)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)


def test_plans_on_a_head_with_the_real_cpu_count(head):
    env, address, _ = head
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


def test_main_job_to_the_end_on_a_head_with_the_real_cpu_count(tmp_path, head):
    """`ray job submit --working-dir . -- python jobs/critique_rl.py`, tiny settings: its plan is
    fitted to the head's CPUs (said in one line where they are short), and it runs both stages to
    the final model, evaluation and summary."""
    env, _, dash = head
    out = tmp_path / "job"
    submit = [str(Path(sys.executable).parent / "ray"), "job", "submit", f"--address=http://127.0.0.1:{dash}",
              f"--working-dir={REPO}", "--", sys.executable, "jobs/critique_rl.py", "stage=both",
              "discrimination_only_step=1", "steps=2", "train_data.num_examples=4", "attempts_per_question=2",
              "rollout_batch_size=4", "num_critiques=2", "eval_data.num_examples=4", "run.eval_every=100",
              f"run.output_dir={out}", "run.use_wandb=false"]
    for _ in range(60):  # the head's job agent comes up some seconds after the GCS
        result = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=800)
        log = result.stdout + result.stderr
        if "No available agent to submit job" not in log:
            break
        time.sleep(3)
    assert result.returncode == 0, log[-4000:]
    assert "succeeded" in log.lower()
    cpus = os.cpu_count()
    # on a small head the plan (critic engine, frozen actor engine, learner) is fitted, said in one line
    assert cpus > 2 or "placement plan asks" in log, log[-4000:]
    if "placement plan asks" in log:
        assert f"cluster has {cpus}: each actor claims" in log, log[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["policy/version"] == 2.0
    assert "eval/acc" in summary and "eval/acc_before" in summary  # evaluated before and after training
    assert (out / "stage1_model" / "config.json").exists() and (out / "final_model" / "config.json").exists()
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
