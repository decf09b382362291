"""Faults injected into a running job, on real actors: SIGKILL a rollout worker mid-generation or
mid-broadcast, a scorer mid-scoring, CDRA's judge engine mid-judging, a learner rank mid-run;
the first four are survived with every sample kept exactly once, the last stops the job naming
the rank (or, with `run.max_job_restarts`, resumes within it) and a resume finishes it."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray

from cdra.config import load_config
from cdra.recipes import grpo
from cdra.recipes.common import PromptStream, latest_checkpoint, load_examples
from cdra.runtime.replay import load_export

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]
STEPS, PROMPTS, GROUP = 4, 4, 4


def slow_r1_zero(response: str, truth: str) -> dict[str, float]:
    """The r1_zero verifier, slowed so that a scorer can be killed while it scores."""
    from cdra.rewards.r1_zero import r1_zero_reward_fn

    time.sleep(0.25)
    return r1_zero_reward_fn(response, truth)


@pytest.fixture(scope="module")
def tiny_model() -> str:
    from cdra.models.tiny import build_tiny_model

    return str(build_tiny_model())


def _config(model: str, out, *extra: str) -> grpo.GRPOConfig:
    return load_config(grpo.GRPOConfig, _args(model, out, *extra))


def _args(model: str, out, *extra: str) -> list[str]:
    return [
        f"model_path={model}", f"steps={STEPS}", f"rollout_batch_size={PROMPTS * GROUP}", f"group_size={GROUP}",
        f"train_batch_size={PROMPTS * GROUP}", "num_rollout_workers=2", "learner.num_ranks=1", "learner.zero_stage=0",
        "learner.micro_batch_size=16", "num_scorers=2", "eval_data.num_examples=4", "eval_samples=0",
        "sampling.max_tokens=128", "sampling.min_tokens=128", "rollout.max_model_len=512", f"run.output_dir={out}", "run.use_wandb=false",
        "run.eval_every=100", *extra,
    ]


def _pid(actor) -> int:
    """The process id of a Ray actor (once it is up), from Ray's state API."""
    from ray.util.state import get_actor

    ray.get(actor.__ray_ready__.remote())
    return get_actor(actor._actor_id.hex(), address=ray.get_runtime_context().gcs_address).pid


def _kill_when_running(session, pid: int, task_name: str | None, after_step: int, killed: dict) -> None:
    """SIGKILL `pid` once the session reached `after_step` and `task_name` (if given) is running
    there (Ray's task states lag ~1 s, so the task must run longer); `killed["stop"]` ends the watch."""
    from ray.util.state import list_tasks

    address = ray.get_runtime_context().gcs_address  # other Ray instances may run on this machine

    def running() -> bool:
        tasks = list_tasks(address=address, filters=[("name", "=", task_name), ("state", "=", "RUNNING")])
        return any(t.worker_pid == pid for t in tasks)

    _kill_when(session, pid, after_step, killed, (lambda: True) if task_name is None else running, poll_s=0.25)


def _kill_during_second_chunk(session, pid: int, worker: int, after_step: int, killed: dict) -> None:
    """SIGKILL rollout worker `worker` (process `pid`) while it samples the second of its two
    chunks of a step: the pool hands that chunk over the moment the first one is counted in
    `served` (odd count), so the kill lands mid-generation without relying on Ray's lagging
    task states."""
    def second_chunk_running() -> bool:
        if session.rollouts.served[worker] % 2 == 0:
            return False
        time.sleep(0.2)  # the chunk was submitted at once; let it start sampling
        return session.rollouts.served[worker] % 2 == 1  # and it has not finished yet

    _kill_when(session, pid, after_step, killed, second_chunk_running, poll_s=0.01)


def _kill_when(session, pid: int, after_step: int, killed: dict, ready, poll_s: float) -> None:
    """From a watcher thread: SIGKILL `pid` at the first `ready()` once the session reached
    `after_step`; `killed` records the step and the engines' served counts, `killed["stop"]` ends it."""
    def watch() -> None:
        while "stop" not in killed and session.step < after_step:
            time.sleep(0.1)
        while "stop" not in killed:
            if ready():
                killed["step"] = session.step
                killed["served"] = list(session.rollouts.served)
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(poll_s)

    threading.Thread(target=watch, daemon=True).start()


def _expected_keys(config: grpo.GRPOConfig) -> collections.Counter:
    stream = PromptStream(load_examples(config.train_data, "train_data"), config.run.seed)
    return collections.Counter((step, e.id, k) for step in range(STEPS) for e in stream.next(PROMPTS) for k in range(GROUP))


def _experience_keys(out) -> tuple[collections.Counter, list]:
    samples = load_export(str(out / "experience.parquet"))
    keys = collections.Counter((s.group_id // 100_000, s.prompt_id, s.metadata["sample_index"]) for s in samples)
    return keys, samples


def test_rollout_worker_killed_mid_generation_and_a_scorer_mid_scoring(tmp_path, tiny_model, ray_local):
    """One run, two SIGKILLs: rollout worker 1 while it generates (step 2), scorer 0 while it
    scores (step 3; the verifier is slowed so that it can be caught). Both restart; the engine
    re-forms the sync group once and gets the learner's version before it serves; every (step,
    prompt, sample index) is kept exactly once, and scored, not zeroed."""
    config = _config(tiny_model, tmp_path / "run", "verifier=tests.test_faults:slow_r1_zero")
    session = grpo.start_session(config)
    victim = 1
    killed: dict = {}
    scorer_killed: dict = {}
    try:
        pid = ray.get(session.rollouts.workers[victim].pid.remote())
        scorer_pids = [_pid(a) for a in session.scorers.actors]
        _kill_during_second_chunk(session, pid, victim, 1, killed)
        _kill_when_running(session, scorer_pids[0], "RuleScorer.score", 2, scorer_killed)
        grpo.train(session, config)
        versions = session.rollouts.versions()
        new_pid = ray.get(session.rollouts.workers[victim].pid.remote())
        new_scorer_pids = [_pid(a) for a in session.scorers.actors]
        counts, served, reformed = dict(session.rollouts.counts), list(session.rollouts.served), session.sync.reformed
    finally:
        killed["stop"] = scorer_killed["stop"] = True
        summary = session.close()
    assert "step" in killed, "the rollout worker was never seen generating"
    assert "step" in scorer_killed, "the scorer was never seen scoring"
    assert new_pid != pid
    assert new_scorer_pids[0] != scorer_pids[0] and new_scorer_pids[1] == scorer_pids[1]  # the killed one restarted
    assert summary["policy/version"] == STEPS
    assert counts["reissued"] >= 1 and counts["restarts"] == 1 and counts["stale"] == 0
    assert reformed == 1  # the group was re-formed once, when the restarted engine came back
    assert versions == [STEPS, STEPS]
    assert served[victim] > killed["served"][victim]  # the restarted engine served again afterwards
    keys, samples = _experience_keys(tmp_path / "run")
    assert keys == _expected_keys(config)  # every (step, prompt, sample index) exactly once
    # sync mode: step k is generated by policy version k, on every engine, restarted or not
    assert all(s.policy_version == s.group_id // 100_000 for s in samples)
    assert all(s.metadata["scorer_error"] == "" for s in samples)  # the killed chunk was scored again, not zeroed


def test_rollout_worker_killed_during_weight_broadcast(tmp_path, tiny_model, ray_local):
    """SIGKILL an engine while it receives a broadcast (the learner pauses after the first of
    several buckets: `pause_broadcasts`): the group is re-formed, the restarted engine gets the
    learner's version before it serves, and no sample is lost or doubled."""
    config = _config(tiny_model, tmp_path / "run", "learner.sync_bucket_mb=1")
    session = grpo.start_session(config)
    victim = 1
    killed: dict = {}
    try:
        assert len(session.sync.layout) > 1  # the kill lands between buckets, not before or after all
        session.learners.call_all("pause_broadcasts", 3.0)
        pid = ray.get(session.rollouts.workers[victim].pid.remote())
        _kill_when_running(session, pid, "RolloutWorker.receive_weights", 1, killed)
        grpo.train(session, config)
        versions = session.rollouts.versions()
        new_pid = ray.get(session.rollouts.workers[victim].pid.remote())
        served, reformed = list(session.rollouts.served), session.sync.reformed
    finally:
        killed["stop"] = True
        summary = session.close()
    assert "step" in killed, "the rollout worker was never seen receiving weights"
    assert new_pid != pid and reformed >= 1
    assert summary["policy/version"] == STEPS
    assert versions == [STEPS, STEPS]
    assert served[victim] > killed["served"][victim]  # the restarted engine served again afterwards
    keys, samples = _experience_keys(tmp_path / "run")
    assert keys == _expected_keys(config)
    assert all(s.policy_version == s.group_id // 100_000 for s in samples)


def test_judge_engine_killed_mid_judging(tmp_path, ray_local):
    """CDRA's served PRM engine is SIGKILLed while it judges: it restarts, the chunk it held is
    judged again, and every sample of every step keeps real step scores (no error, no zero)."""
    from cdra.recipes import cdra
    from cdra.recipes.session import Session

    steps = 3
    config = load_config(cdra.CDRAConfig, [f"steps={steps}", "eval_data.num_examples=8", "prm_eval_samples=0", "run.eval_every=100",
                                           f"run.output_dir={tmp_path / 'run'}", "run.use_wandb=false"])
    session = Session.start(config.run, config, model_path=config.model_path, zoo_checkpoint="steps", roles=cdra.roles_of(config),
                            prepared=cdra.prepare(config))
    killed: dict = {}
    try:
        judge = cdra.start_judge(session, config)
        pool = session.roles[cdra.JUDGE_ROLE]
        pid = ray.get(pool.workers[0].pid.remote())
        _kill_when_running(session, pid, "RolloutWorker.judge", 1, killed)
        cdra.train(session, config, judge)
        counts, new_pid = dict(pool.counts), ray.get(pool.workers[0].pid.remote())
        stats = judge.stats()
    finally:
        killed["stop"] = True
        summary = session.close()
    assert "step" in killed, "the judge engine was never seen judging"
    assert new_pid != pid and counts["restarts"] == 1 and counts["reissued"] == 1
    assert summary["policy/version"] == steps
    assert stats["judge/errors"] == 0 and stats["judge/timeouts"] == 0
    samples = load_export(str(tmp_path / "run" / "experience.parquet"))
    keys = collections.Counter((s.group_id // 100_000, s.prompt_id, s.metadata["sample_index"]) for s in samples)
    assert len(keys) == steps * config.rollout_batch_size and set(keys.values()) == {1}
    assert all(s.metadata["judge_error"] == "" and s.metadata["step_scores"] for s in samples)


def _run_job_killing_a_learner(out, model: str, after_step: int, *extra: str) -> subprocess.CompletedProcess:
    """`python jobs/grpo.py` as a user runs it; its learner rank 0 (a Ray worker process below the
    job's own local Ray) is SIGKILLed once, when the checkpoint of step `after_step` is complete
    (not when metrics.jsonl has the step: a step logs its metrics before it checkpoints)."""
    import psutil

    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "PYTHONPATH": str(REPO)}
    job = subprocess.Popen([sys.executable, str(REPO / "jobs" / "grpo.py"), *_args(model, out, *extra)], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def watch() -> None:
        while job.poll() is None:
            checkpoint = latest_checkpoint(str(out))
            if checkpoint is not None and checkpoint[1]["step"] >= after_step:
                for p in psutil.Process(job.pid).children(recursive=True):
                    if "_LazyLearner" in " ".join(p.cmdline()):
                        p.kill()
                        return
            time.sleep(0.1)

    threading.Thread(target=watch, daemon=True).start()
    stdout, stderr = job.communicate(timeout=900)
    return subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)


_DIED = r"^error: learner rank 0 died during .*run\.resume=true"
_ONE_ENGINE = ("num_rollout_workers=1", "num_scorers=1")  # the learner is the victim: one engine and scorer suffice


def test_dead_learner_rank_prints_one_line_exits_non_zero_and_resume_finishes(tmp_path, tiny_model, ray_local):
    """`python jobs/grpo.py` whose learner rank is SIGKILLed: one line naming the rank, exit 1, the
    last checkpoint kept and no final model; a later `run.resume=true` run finishes the job."""
    out = tmp_path / "run"
    result = _run_job_killing_a_learner(out, tiny_model, 1, *_ONE_ENGINE, "run.checkpoint_every=1")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len([line for line in result.stderr.splitlines() if re.match(_DIED, line)]) == 1, result.stderr[-3000:]
    assert (out / "checkpoints" / "latest.json").exists() and not (out / "final_model").exists()
    summary = grpo.run(_config(tiny_model, out, *_ONE_ENGINE, "run.checkpoint_every=1", "run.resume=true"))
    assert summary["policy/version"] == STEPS
    assert summary["resume/loaded_checksum"] == summary["resume/saved_checksum"]
    assert (out / "final_model" / "config.json").exists()


def test_max_job_restarts_resumes_a_dead_learner_in_the_same_job(tmp_path, tiny_model):
    out = tmp_path / "run"
    result = _run_job_killing_a_learner(out, tiny_model, 2, *_ONE_ENGINE, "run.checkpoint_every=1", "run.max_job_restarts=1")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert len([line for line in lines if re.match(_DIED, line)]) == 1, result.stderr[-3000:]
    assert any("resuming from the last checkpoint (restart 1 of 1)" in line for line in lines)
    assert "Traceback" not in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["policy/version"] == STEPS
    assert summary["resume/loaded_checksum"] == summary["resume/saved_checksum"]
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == list(range(1, STEPS + 1))
    keys, _ = _experience_keys(out)
    assert keys == _expected_keys(_config(tiny_model, out))  # every (step, prompt, sample index) once
