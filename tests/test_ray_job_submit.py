"""`ray start --head` + `ray job submit -- python jobs/grpo.py ...` against a real local cluster."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(900), pytest.mark.integration, pytest.mark.exclusive]
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_job_submit_to_running_cluster(tmp_path, r1_model):
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"  # a loopback-only test cluster; no token to hand around
    gcs, dash = _free_port(), _free_port()
    start = [str(bin_dir / "ray"), "start", "--head", f"--port={gcs}", f"--dashboard-port={dash}",
             # never the default 52365: a second head on this machine would lose its job agent
             f"--dashboard-agent-listen-port={_free_port()}",
             "--dashboard-host=127.0.0.1", "--num-cpus=16", "--disable-usage-stats", "--block",
             f"--temp-dir=/tmp/cdra-ray-{gcs}"]  # own session dir: later tests never find this cluster
    # --block keeps `ray start` in the foreground: ending its process group ends this cluster
    # alone (`ray stop` would also stop any other Ray instance on the machine).
    head = subprocess.Popen(start, env=env, start_new_session=True)
    try:
        _wait_for_dashboard(dash)
        out = tmp_path / "job"
        submit = [str(bin_dir / "ray"), "job", "submit", f"--address=http://127.0.0.1:{dash}", "--",
                  sys.executable, str(REPO / "jobs" / "grpo.py"), f"model_path={r1_model}", "steps=1",
                  "rollout_batch_size=16", "group_size=4", "train_batch_size=16", "num_rollout_workers=1",
                  "learner.num_ranks=1", "num_scorers=1", "eval_data.num_examples=4",
                  f"run.output_dir={out}", "run.use_wandb=false"]
        result = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=800)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "succeeded" in (result.stdout + result.stderr).lower()
        summary = json.loads((out / "summary.json").read_text())
        assert summary["policy/version"] == 1.0
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)


def _wait_for_dashboard(port: int, timeout_s: float = 400.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=5):
                return
        except urllib.error.HTTPError:  # it answers (e.g. 401 when token auth is on): it is up
            return
        except OSError:
            time.sleep(2)
    raise TimeoutError(f"Ray dashboard did not come up on port {port}")
