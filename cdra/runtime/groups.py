"""Driver-side handles on groups of actors: rollout engines, learner ranks, weight sync.

Rollout engines are restartable: a chunk of prompts whose engine died is re-issued, unchanged
(same prompts, same seed offset, so the same prompt ids and sample indices), to a live engine,
and a restarted engine first re-joins the weight-sync group and receives the current weights
(see `WeightSync`). Learner ranks are not restartable (their optimizer state lives in the
DeepSpeed group): a dead rank ends the job with `LearnerDiedError`; `run.resume=true` continues
from the last checkpoint.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from cdra.algos.experience import Sample
from cdra.config import RecoverableFault
from cdra.rewards.judging import JudgeError, Judgement
from cdra.runtime.learner import LearnerConfig, LearnerWorker
from cdra.runtime.objectives import Objective
from cdra.runtime.rollout import Completion, EngineConfig, RolloutWorker, SamplingConfig
from cdra.runtime.weight_sync import sync_ranks

_RESTART_WAIT_S = 600.0  # a restarting engine reloads its model; vLLM on CPU takes ~30-60 s
_JUDGE_GRACE_S = 30.0  # past its own time limit, how long a judge engine may take to answer at all


class LearnerDiedError(RecoverableFault):
    """A learner rank's process died; the run cannot continue without a resume."""


@dataclass
class RolloutJob:
    """One batch of generation: chunks not yet dispatched, in flight, and done."""

    sampling: SamplingConfig
    n: int
    started: float
    queue: list[tuple[int, list[list[int]]]]
    pending: dict[ray.ObjectRef, tuple[int, list[list[int]], int, int]] = field(default_factory=dict)  # ref -> (start, chunk, worker, version)
    results: dict[int, dict] = field(default_factory=dict)
    home: dict[int, int] = field(default_factory=dict)  # chunk start -> the engine that samples it while that engine is up


class RolloutPool:
    """N RolloutWorker actors; prompts are cut into chunks, each sampled by its own engine (round robin)."""

    def __init__(self, config: EngineConfig, num_workers: int, actor_options: list[dict] | None = None, chunks_per_worker: int = 2,
                 max_restarts: int = 3) -> None:
        config.validate()
        remote = ray.remote(RolloutWorker)
        options = actor_options or [{"num_cpus": 1} for _ in range(num_workers)]
        # no Ray task retries: a retried generate would run on the restarted engine before it
        # has the current weights; the pool re-issues the chunk itself (see `_finish`)
        self.workers = [remote.options(max_restarts=max_restarts, max_task_retries=0, **opt).remote(config, i) for i, opt in enumerate(options)]
        ray.get([w.ready.remote() for w in self.workers])
        self.chunks_per_worker = chunks_per_worker
        self.last_stats: dict[str, float] = {}
        self.sync: WeightSync | None = None  # set by WeightSync; None: engines keep their base weights (version 0)
        self.version = 0  # the policy version every serving engine must hold
        self.down: set[int] = set()  # workers that died since they last (re-)joined weight sync
        self.counts = {"restarts": 0, "reissued": 0, "stale": 0}
        self.served = [0] * len(self.workers)  # chunks served per worker

    def _chunks(self, prompts: list[list[int]]) -> list[tuple[int, list[list[int]]]]:
        # `chunks_per_worker` chunks per engine, each with its own engine (`_engine_for`); a lone
        # engine is fastest with the whole batch at once (halving vLLM's batch cost ~20% CPU per
        # token, benchmarks/rollout_throughput.py)
        per_worker = self.chunks_per_worker if len(self.workers) > 1 else 1
        num_chunks = max(1, min(len(prompts), len(self.workers) * per_worker))
        bounds = [round(i * len(prompts) / num_chunks) for i in range(num_chunks + 1)]
        return [(bounds[i], prompts[bounds[i] : bounds[i + 1]]) for i in range(num_chunks)]

    def _job(self, prompts: list[list[int]], sampling: SamplingConfig, n: int) -> RolloutJob:
        if self.down:
            self.recover()
        chunks = self._chunks(prompts)
        return RolloutJob(sampling, n, time.perf_counter(), chunks, home={start: i % len(self.workers) for i, (start, _) in enumerate(chunks)})

    def _dispatch(self, job: RolloutJob, start: int, chunk: list[list[int]], worker: int) -> None:
        ref = self.workers[worker].generate.remote(chunk, job.sampling, job.n, start)
        job.pending[ref] = (start, chunk, worker, self.version)

    def generate(self, prompts: list[list[int]], sampling: SamplingConfig, n: int = 1) -> list[list[Completion]]:
        """Blocking generation; each chunk goes to its own engine (`_engine_for`)."""
        return self._finish(self._job(prompts, sampling, n))

    def submit(self, prompts: list[list[int]], sampling: SamplingConfig, n: int = 1) -> RolloutJob:
        """Dispatch now, return at once (async mode); chunks are spread round-robin. See `collect`."""
        job = self._job(prompts, sampling, n)
        live = self._live()
        for i, (start, chunk) in enumerate(job.queue):
            self._dispatch(job, start, chunk, live[i % len(live)])
        job.queue.clear()
        return job

    def collect(self, job: RolloutJob) -> list[list[Completion]]:
        return self._finish(job)

    def _live(self) -> list[int]:
        return [i for i in range(len(self.workers)) if i not in self.down]

    def _finish(self, job: RolloutJob) -> list[list[Completion]]:
        """Drive a job to the end. A chunk whose engine died, or that came back from an engine
        not holding the expected weights (restarted while idle), goes back in the queue and is
        re-run as it was: same prompts and seed offset, so no sample is lost or duplicated."""
        while job.queue or job.pending:
            busy = {w for _, _, w, _ in job.pending.values()}
            idle = [i for i in self._live() if i not in busy]
            if job.queue and not idle and not job.pending:
                self.recover()  # every engine is down: wait for the restarts
                continue
            for start, chunk in list(job.queue):
                worker = self._engine_for(job, start, idle)
                if worker is not None:
                    job.queue.remove((start, chunk))
                    idle.remove(worker)
                    self._dispatch(job, start, chunk, worker)
            done, _ = ray.wait(list(job.pending), num_returns=1)
            start, chunk, worker, version = job.pending.pop(done[0])
            try:
                out = ray.get(done[0])
            except RayActorError as e:
                print(f"[cdra] rollout worker {worker} died ({type(e).__name__}); re-issuing its {len(chunk)} prompts")
                self._mark_down(worker)
                self.counts["reissued"] += 1
                job.queue.append((start, chunk))
                continue
            if out["version"] != version:
                self._mark_down(worker)
                self.counts["stale"] += 1
                job.queue.append((start, chunk))
                continue
            self.served[worker] += 1
            job.results[start] = out
        return self._assemble(job)

    def _engine_for(self, job: RolloutJob, start: int, idle: list[int]) -> int | None:
        """The chunk's own engine once it is idle, so that each engine gets the same chunks in the
        same order on every run: an engine samples with its own seed (vLLM on CPU ignores
        per-request ones), and handing chunks to whichever engine is free first would make a
        run's samples depend on timing. A chunk whose engine is down goes to any idle engine."""
        home = job.home[start]
        if home in idle:
            return home
        return idle[0] if home in self.down and idle else None

    def _mark_down(self, worker: int) -> None:
        if worker not in self.down:
            self.down.add(worker)
            self.counts["restarts"] += 1

    def recover(self) -> None:
        """Bring restarted workers back: re-form weight sync and send the current weights."""
        if self.sync is not None:
            self.sync.push(self.version)  # waits for restarting members and re-forms the group
        else:
            for i in sorted(self.down):
                wait_alive(self.workers[i], f"rollout worker {i}")
            self.down.clear()

    def _assemble(self, job: RolloutJob) -> list[list[Completion]]:
        groups: list[list[Completion]] = []
        for start in sorted(job.results):
            groups.extend(job.results[start]["groups"])
        tokens = sum(r["tokens"] for r in job.results.values())
        elapsed = time.perf_counter() - job.started
        self.last_stats = {"rollout/tokens": float(tokens), "rollout/seconds": elapsed, "rollout/tokens_per_s": tokens / max(elapsed, 1e-9),
                           **{f"rollout/{k}": float(v) for k, v in self.counts.items()}}
        return groups

    def versions(self) -> list[int]:
        return ray.get([w.weight_version.remote() for w in self.workers])

    def judge(self, prompts: list[list[int]], sampling: SamplingConfig, n: int = 1, top_logprobs: int = 0,
              time_limit_s: float = 60.0, grace_s: float = _JUDGE_GRACE_S, reissue: bool = True) -> list[list[Judgement] | JudgeError]:
        """Judge calls (`RolloutWorker.judge`): one chunk per live engine, each within
        `time_limit_s`; every prompt gets its judgements or a `JudgeError`, nothing raises.

        An engine that dies, comes back holding other weights than the pool's version, or does
        not answer `grace_s` after the limit (killed here; Ray restarts it) is marked down, and
        the next call first brings it back with the current weights. The chunk of an engine
        that died is judged again, once, after the pool recovered (``reissued``): a judge at
        T 0 gives the same judgements, so a killed judge engine loses no score.
        """
        if not prompts:
            return []
        if self.down:
            self.recover()
        live = self._live()
        parts = min(len(live), len(prompts))
        bounds = [round(i * len(prompts) / parts) for i in range(parts + 1)]
        calls = {}
        for k in range(parts):
            chunk = prompts[bounds[k] : bounds[k + 1]]
            calls[self.workers[live[k]].judge.remote(chunk, sampling, n, top_logprobs, time_limit_s)] = (bounds[k], len(chunk), live[k])
        results: list[list[Judgement] | JudgeError] = [JudgeError("error", "not judged")] * len(prompts)
        died: list[tuple[int, int]] = []
        done, late = ray.wait(list(calls), num_returns=len(calls), timeout=time_limit_s + grace_s)
        for ref in done:
            start, size, worker = calls[ref]
            try:
                out = ray.get(ref)
            except RayActorError as e:
                self._mark_down(worker)
                died.append((start, size))
                out = {"results": [JudgeError("error", f"judge engine {worker} died ({type(e).__name__})")] * size, "version": self.version}
            except RayTaskError as e:
                cause = getattr(e, "cause", e)
                out = {"results": [JudgeError("error", f"judge engine {worker} raised {type(cause).__name__}: {cause}")] * size,
                       "version": self.version}
            if out["version"] != self.version:
                self._mark_down(worker)
                self.counts["stale"] += 1
                out["results"] = [JudgeError("error", f"judge engine {worker} held weights v{out['version']}, expected v{self.version}")] * size
            results[start : start + size] = out["results"]
        for ref in late:
            start, size, worker = calls[ref]
            ray.kill(self.workers[worker], no_restart=False)
            self._mark_down(worker)
            results[start : start + size] = [JudgeError("timeout", f"judge engine {worker} gave no answer {grace_s:g}s past the "
                                                       f"{time_limit_s:g}s limit; restarted")] * size
        if died and reissue:
            again = [prompts[i] for start, size in died for i in range(start, start + size)]
            self.counts["reissued"] += len(died)
            judged = iter(self.judge(again, sampling, n, top_logprobs, time_limit_s, grace_s, reissue=False))
            for start, size in died:
                results[start : start + size] = [next(judged) for _ in range(size)]
        return results


def wait_alive(actor: Any, what: str, method: str = "sync_state", timeout_s: float = _RESTART_WAIT_S) -> Any:
    """Call `method` on a (possibly restarting) actor until it answers.

    Calls made before Ray has seen the death fail at once; once it knows the actor is
    restarting they queue until it is back. An actor out of restarts is reported as gone.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ray.get(getattr(actor, method).remote(), timeout=max(1.0, deadline - time.monotonic()))
        except (RayActorError, GetTimeoutError):
            if _actor_state(actor) == "DEAD":
                raise RuntimeError(f"{what} died and has no restarts left") from None
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not come back within {timeout_s:g}s")
        time.sleep(1.0)


def _actor_state(actor: Any) -> str | None:
    """ALIVE / RESTARTING / DEAD ... from Ray's state API, None where it cannot answer."""
    from ray.util.state import get_actor

    try:
        state = get_actor(actor._actor_id.hex(), address=ray.get_runtime_context().gcs_address, timeout=10)
    except Exception:  # the state API is a dashboard service; its absence must not end the run
        return None
    return None if state is None else state.state


class LearnerGroup:
    """N LearnerWorker actors forming one DeepSpeed data-parallel group."""

    def __init__(self, config: LearnerConfig, pad_id: int, actor_options: list[dict] | None = None) -> None:
        config.validate()
        remote = ray.remote(_LazyLearner)
        options = actor_options or [{"num_cpus": 1} for _ in range(config.num_ranks)]
        self.workers = [remote.options(**opt).remote() for opt in options]
        addr, port = self.rendezvous = self.get([self.workers[0].rendezvous.remote()], "rendezvous")[0]
        self.get([w.setup.remote(rank, config, addr, port, pad_id) for rank, w in enumerate(self.workers)], "setup")
        self.config = config

    def get(self, refs: list[ray.ObjectRef], what: str) -> list[Any]:
        """ray.get, with a dead rank (or a collective broken by one) reported as one line naming it."""
        try:
            return ray.get(refs)
        except (RayActorError, RayTaskError):
            self.check_alive(what)
            raise

    def check_alive(self, what: str) -> None:
        """Raise LearnerDiedError naming every rank whose process is gone."""
        dead = [rank for rank, w in enumerate(self.workers) if not _answers(w)]
        if dead:
            ranks = ", ".join(map(str, dead))
            raise LearnerDiedError(f"learner rank {ranks} died during {what}; "
                                   "rerun with run.resume=true to continue from the last checkpoint") from None

    def shard(self, samples: list[Sample]) -> list[list[Sample]]:
        """Equal-size contiguous shards; short shards are topped up with zero-weight copies so
        every rank runs the same number of micro-batches (collectives must line up). A copy
        counts in no loss or normalizer (`objectives.loss_units`): the gradient is the batch's."""
        n = len(self.workers)
        size = -(-len(samples) // n)
        shards = [samples[i * size : (i + 1) * size] for i in range(n)]
        for s in shards:
            while len(s) < size:
                filler = copy.copy(samples[len(s) % len(samples)])
                filler.loss_weight = 0.0
                s.append(filler)
        return shards

    def train(self, samples: list[Sample], objective: Objective, optimizer_steps: int = 1) -> dict[str, float]:
        shards = self.shard(samples)
        results = self.get([w.call.remote("train", shard, objective, optimizer_steps) for w, shard in zip(self.workers, shards)], "train")
        metrics = {k: sum(r[k] for r in results) / len(results) for k in results[0] if k not in ("tokens", "tokens_per_s")}
        metrics["tokens"] = sum(r["tokens"] for r in results)
        metrics["tokens_per_s"] = metrics["tokens"] / max(max(r["seconds"] for r in results), 1e-9)
        return {f"learner/{k}": v for k, v in metrics.items()}

    def logprobs(self, samples: list[Sample]) -> list[list[float]]:
        return self.get([self.workers[0].call.remote("logprobs", samples)], "logprobs")[0]

    def call_all(self, method: str, *args: Any) -> list[Any]:
        return self.get([w.call.remote(method, *args) for w in self.workers], method)

    def save_checkpoint(self, directory: str, tag: str, client_state: dict[str, Any]) -> None:
        self.call_all("save_checkpoint", directory, tag, client_state)

    def load_checkpoint(self, directory: str, tag: str) -> dict[str, Any]:
        return self.call_all("load_checkpoint", directory, tag)[0]

    def save_pretrained(self, directory: str, tokenizer_path: str) -> None:
        self.call_all("save_pretrained", directory, tokenizer_path)


def _answers(actor: Any, timeout_s: float = 10.0) -> bool:
    try:
        ray.get(actor.__ray_ready__.remote(), timeout=timeout_s)
        return True
    except RayActorError:
        return False
    except GetTimeoutError:
        return True  # alive but busy


class _LazyLearner:
    """Creates the LearnerWorker after rank 0's address is known (DeepSpeed needs it at init)."""

    def rendezvous(self) -> tuple[str, int]:
        from cdra.runtime.cluster import node_address

        return node_address()

    def setup(self, rank: int, config: LearnerConfig, addr: str, port: int, pad_id: int) -> None:
        self.worker = LearnerWorker(rank, config, addr, port, pad_id)

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.worker, method)(*args)

    def leave_sync_group(self) -> None:
        """Drop a weight-sync group broken by a dead member; closing its sockets also frees
        receivers still waiting in it."""
        self.worker.sync_group = None


class WeightSync:
    """One process group: learner rank 0 (sender) + every engine (receivers); versioned updates.

    Membership is by worker index. A restarted engine comes back outside the group (a gloo
    group with a dead member is broken for every member), so before each push the engines are
    asked which group generation they hold; if any is not in the current one, the whole group
    is re-formed on a fresh port, and the push then brings the restarted engine up to the
    current weights and version before the pool lets it serve.
    """

    def __init__(self, learners: LearnerGroup, engines: RolloutPool | list, max_attempts: int = 3) -> None:
        self.learners = learners
        self.pool = engines if isinstance(engines, RolloutPool) else None
        self.engines = self.pool.workers if self.pool else list(engines)
        self.max_attempts = max_attempts
        self.sender = learners.workers[0]
        self.backend = learners.get([self.sender.call.remote("sync_backend")], "weight sync setup")[0]
        self.layout = learners.get([self.sender.call.remote("weight_layout")], "weight sync setup")[0]
        self.generation = 0
        self.reformed = 0
        self._form()
        self.version = 0
        if self.pool is not None:
            self.pool.sync = self

    def _form(self) -> None:
        addr, port = self.rendezvous = self.learners.get([self.sender.rendezvous.remote()], "weight sync rendezvous")[0]
        self.generation += 1
        firsts, world = sync_ranks(ray.get([e.sync_width.remote() for e in self.engines]))
        ray.get([e.init_weight_group.remote(self.backend, addr, port, first, world, self.generation) for e, first in zip(self.engines, firsts)]
                + [self.sender.call.remote("init_sync_group", addr, port, world)])

    def _ensure_members(self, broken: bool) -> None:
        if broken:  # first: the sender's sockets closing frees receivers still waiting in the group
            self.learners.get([self.sender.leave_sync_group.remote()], "weight sync re-forming")
        states = [wait_alive(e, f"rollout worker {i}") for i, e in enumerate(self.engines)]
        if broken or any(generation != self.generation for generation, _ in states):
            if not broken:
                self.learners.get([self.sender.leave_sync_group.remote()], "weight sync re-forming")
            self._form()
            self.reformed += 1

    def push(self, version: int) -> float:
        """Broadcast the learner's weights as `version`; returns once every engine acknowledged.

        An engine dying mid-broadcast breaks the group for all members: the sender leaves it
        (which also frees receivers still waiting in it), the restarted engine is awaited, the
        group is re-formed and the broadcast repeated; receivers just reload the same weights.
        """
        started = time.perf_counter()
        broken = False
        for _ in range(self.max_attempts):
            self._ensure_members(broken)
            receivers = [e.receive_weights.remote(version, self.layout) for e in self.engines]
            senders = [w.call.remote("broadcast_weights", version) for w in self.learners.workers]
            try:
                acks = _gather_fail_fast(receivers + senders)[: len(receivers)]
            except (RayActorError, RayTaskError) as e:
                self.learners.check_alive("weight broadcast")
                print(f"[cdra] weight sync v{version} failed ({type(e).__name__}); re-forming the group")
                broken = True
                continue
            if any(a != version for a in acks):
                raise RuntimeError(f"weight sync v{version}: engines acknowledged {acks}")
            break
        else:
            raise RuntimeError(f"weight sync v{version} failed {self.max_attempts} times")
        self.version = version
        if self.pool is not None:
            self.pool.version = version
            self.pool.down.clear()
        return time.perf_counter() - started


def _gather_fail_fast(refs: list[ray.ObjectRef]) -> list[Any]:
    """ray.get that raises the first failure as soon as it happens, not after earlier refs."""
    remaining = list(refs)
    while remaining:
        done, remaining = ray.wait(remaining, num_returns=1)
        ray.get(done[0])
    return ray.get(refs)
