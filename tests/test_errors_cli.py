"""Every class of bad input to a job fails before any actor starts: one line on stderr naming the
key (or file), exit status 2, no Ray.

Each case runs the job script's own `__main__` block (`runpy`, as `python jobs/X.py` would) in
this process, where a started Ray would show as `ray.is_initialized()`; a few cases also run the
script in a subprocess exactly as a user does, for what only a fresh process shows (the exit
status, a clean stderr without a traceback, no Ray session directory, the CPU it costs)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import ray
from jobscript import JobResult, run_job_script

# imports the recipes (torch, ray, vllm); a few cases start a job's process. `no_ray`: an earlier
# test's Ray instance is shut down, so that a job starting one would show.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_ray")]
ROOT = Path(__file__).resolve().parents[1]
# CPU seconds of a job process that fails on its input: importing a recipe (torch, ray,
# transformers) costs a few; wall time is no guide on a shared 2-core machine.
CPU_LIMIT_S = 20.0


def run_job(job: str, *args: str) -> JobResult:
    """`python jobs/<job>.py ARGS` in this process; a Ray instance it started is shut down."""
    assert not ray.is_initialized()
    result = run_job_script(job, *args)
    if result.ray_started:
        ray.shutdown()
    return result


def run_job_process(job: str, *args: str) -> JobResult:
    """`python jobs/<job>.py ARGS` in its own process, as a user runs it. That no actor started is
    shown by Ray's temp dir (RAY_TMPDIR) staying empty: ray.init writes its session there first."""
    with tempfile.TemporaryDirectory() as ray_tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": "", "RAY_TMPDIR": ray_tmp}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run([sys.executable, str(ROOT / "jobs" / f"{job}.py"), *args], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=300)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        return JobResult(proc.returncode, proc.stdout, proc.stderr, any(Path(ray_tmp).iterdir()), cpu)


def assert_clean_error(result: JobResult, *names: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    for name in names:
        assert name in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert not result.ray_started and result.cpu_s < CPU_LIMIT_S
    return lines[0]


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("data")
    good = '{"question": "1+1?", "answer": "#### 2"}\n'
    (d / "latin1.jsonl").write_bytes(good.encode() + '{"question": "caf\xe9", "answer": "#### 3"}\n'.encode("latin-1"))
    (d / "missing_answer.jsonl").write_text(good + '{"question": "2+2?"}\n')
    (d / "model").mkdir()
    return {p.name: p for p in d.iterdir()}


# (bad override(s), what the one line must name): the bad inputs of issue 20, one per class
GRPO_CASES = [
    (["learner.lr=inf"], ["learner.lr", "finite"]),
    (["learner.lr=nan"], ["learner.lr", "finite"]),
    (["sampling.temperature=nan"], ["sampling.temperature"]),
    (["epochs=0"], ["epochs"]),
    (["group_size=0"], ["group_size"]),
    (["train_batch_size=0"], ["train_batch_size"]),
    (["num_rollout_workers=0"], ["num_rollout_workers"]),
    (["num_scorers=0"], ["num_scorers"]),
    (["rollout_batch_size=0"], ["rollout_batch_size"]),
    (["kl_coef=-1"], ["kl_coef"]),
    (["cliprange=-1"], ["cliprange"]),
    (["verifier_timeout_s=0"], ["verifier_timeout_s"]),
    (["rollout.gpu_memory_utilization=5"], ["rollout.gpu_memory_utilization"]),
    (["learner.extra_ds_config={zero_optimization: {stage: 0}}"], ["learner.extra_ds_config", "zero_optimization"]),
    (["learner.micro_batch_size=0"], ["learner", "micro_batch_size"]),
    (["sampling.top_p=0"], ["sampling", "top_p"]),
    (["verifier=no_such_verifier"], ["verifier", "no_such_verifier"]),
    (["verifier=no_such_module:fn"], ["verifier", "no_such_module"]),
    (["prompt_template=no_such_template"], ["prompt_template", "no_such_template"]),
    (["eval_data.num_examples=0"], ["eval_data.num_examples"]),
    (["train_data.format=gsm8k"], ["train_data", "needs a path"]),
    (["train_data.format=gsm8k", "train_data.path=/no/such/file.jsonl"], ["train_data", "/no/such/file.jsonl"]),
    (["train_data.path=/no/such/file.jsonl", "train_data.format=gsm8k"], ["train_data", "/no/such/file.jsonl"]),
    (["model_path=/no/such/model"], ["model_path", "/no/such/model"]),
    (["run.stop_after=0"], ["stop_after"]),
    (["no_such_key=1"], ["no_such_key"]),
    (["steps=three"], ["steps", "three"]),
    (["--config", "/no/such/config.yaml"], ["/no/such/config.yaml"]),
]


@pytest.mark.parametrize("args,names", GRPO_CASES, ids=[" ".join(a) for a, _ in GRPO_CASES])
def test_grpo_bad_input_is_one_line_exit_2_before_any_actor(args, names):
    assert_clean_error(run_job("grpo", *args), *names)


def test_bad_data_rows_name_the_file_and_row(data_files):
    line = assert_clean_error(run_job("grpo", "train_data.format=gsm8k", f"train_data.path={data_files['latin1.jsonl']}"),
                              "train_data", "latin1.jsonl")
    assert "row 2" in line and "not UTF-8" in line
    line = assert_clean_error(run_job("grpo", "train_data.format=gsm8k", f"train_data.path={data_files['missing_answer.jsonl']}"),
                              "missing_answer.jsonl", "row 2")


def test_bad_model_directory_is_named(data_files):
    assert_clean_error(run_job("expert_iteration", f"model_path={data_files['model']}"), "model_path", "config.json")


@pytest.mark.parametrize("job,args,names", [
    ("critique_rl", ["num_critiques=1"], ["num_critiques"]),
    ("critique_rl", ["critic_engine.gpu_memory_utilization=0"], ["critic_engine.gpu_memory_utilization"]),
    ("critique_rl", ["actor_path=/no/such/actor"], ["actor_path"]),
    ("critique_rl", ["verifier=nope"], ["verifier", "nope"]),
    ("sft", ["learner.lr=inf"], ["learner.lr"]),
    ("sft", ["batch_size=0"], ["batch_size"]),
    ("expert_iteration", ["questions_per_step=0"], ["questions_per_step"]),
    ("expert_iteration", ["sampling.min_tokens=500"], ["sampling.min_tokens"]),
    ("evaluate", ["num_actor_workers=0"], ["num_actor_workers"]),
    ("evaluate", ["data.num_examples=0"], ["data.num_examples"]),
    ("evaluate", ["baseline=/no/such/eval"], ["baseline", "/no/such/eval"]),
])
def test_other_jobs_bad_input(job, args, names):
    assert_clean_error(run_job(job, *args), *names)


@pytest.mark.parametrize("job", ["grpo", "critique_rl", "sft", "expert_iteration", "evaluate"])
def test_check_prints_config_and_planned_actors_without_ray(job):
    result = run_job(job, "--check")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "check passed" in result.stdout and "actors (role x count" in result.stdout
    assert not result.ray_started


@pytest.mark.parametrize("job,args,names", [
    ("grpo", ["no_such_key=1"], ["no_such_key"]),
    ("critique_rl", ["actor_path=/no/such/actor"], ["actor_path"]),
])
def test_bad_input_in_a_fresh_process_is_one_line_exit_2_without_a_ray_session(job, args, names):
    assert_clean_error(run_job_process(job, *args), *names)


def test_check_in_a_fresh_process_exits_0_without_a_ray_session():
    result = run_job_process("grpo", "--check")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "check passed" in result.stdout and not result.ray_started and result.cpu_s < CPU_LIMIT_S


def test_check_counts_skipped_rows(data_files):
    proc = run_job("grpo", "--check", "train_data.format=gsm8k", f"train_data.path={data_files['missing_answer.jsonl']}",
                      "train_data.on_error=skip", "learner.num_ranks=1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "train_data: 1 examples, 1 rows skipped" in proc.stdout
    assert "rollout x 2: 1 CPU / 1 GPU" in proc.stdout and "learner x 1: 1 CPU / 1 GPU" in proc.stdout
