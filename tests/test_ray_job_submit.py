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


def test_main_job_to_the_end_on_a_head_with_the_real_cpu_count(tmp_path):
    """The README's lines as written on this machine: `ray start --head` (no --num-cpus: the
    machine's real count) and `ray job submit --working-dir . -- python jobs/critique_rl.py`, tiny
    settings, both stages, to the final model, evaluation and summary."""
    from tests.test_resources import _start_head, _stop_head, _wait_for_gcs

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"  # a loopback-only test cluster; no token to hand around
    env["PYTHONPATH"] = str(REPO)  # the job imports this checkout's cdra, not an installed one
    head, gcs, dash = _start_head(env)  # --num-cpus=os.cpu_count()
    try:
        _wait_for_gcs(f"127.0.0.1:{gcs}", env)
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
        summary = json.loads((out / "summary.json").read_text())
        assert summary["policy/version"] == 2.0
        assert "eval/acc" in summary and "eval/acc_before" in summary  # evaluated before and after training
        assert (out / "stage1_model" / "config.json").exists() and (out / "final_model" / "config.json").exists()
        assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    finally:
        _stop_head(head)
