"""`python jobs/<job>.py ARGS` run in this process: the script's own `__main__` block under runpy,
with its stdout and stderr captured. A job then joins this process's Ray instance (or starts
one) instead of paying a fresh interpreter's imports and its own `ray.init`; what only a fresh
process shows (exit status, a clean stderr) is tested in test_errors_cli.py."""

from __future__ import annotations

import contextlib
import io
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class JobResult:
    returncode: int
    stdout: str
    stderr: str
    ray_started: bool = False  # whether the job left a Ray instance up in this process
    cpu_s: float = 0.0  # CPU seconds of a job run in its own process (0 in this one)


def run_job_script(job: str, *args: str) -> JobResult:
    import ray

    stdout, stderr = io.StringIO(), io.StringIO()
    argv, path = sys.argv, list(sys.path)
    sys.argv = [str(REPO / "jobs" / f"{job}.py"), *args]
    code = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv, sys.path[:] = argv, path
    return JobResult(code, stdout.getvalue(), stderr.getvalue(), ray.is_initialized())
