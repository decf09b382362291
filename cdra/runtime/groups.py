"""Driver-side handles on groups of actors: rollout engines, learner ranks, weight sync."""

from __future__ import annotations

import copy
import time
from typing import Any

import ray

from cdra.algos.experience import Sample
from cdra.runtime.learner import LearnerConfig, LearnerWorker
from cdra.runtime.objectives import Objective
from cdra.runtime.rollout import Completion, EngineConfig, RolloutWorker, SamplingConfig
from cdra.runtime.weight_sync import sync_ranks


class RolloutPool:
    """N RolloutWorker actors; prompts are cut into chunks handed to whichever engine is free."""

    def __init__(self, config: EngineConfig, num_workers: int, actor_options: list[dict] | None = None, chunks_per_worker: int = 2) -> None:
        config.validate()
        remote = ray.remote(RolloutWorker)
        options = actor_options or [{"num_cpus": 1} for _ in range(num_workers)]
        self.workers = [remote.options(max_restarts=2, **opt).remote(config, i) for i, opt in enumerate(options)]
        ray.get([w.ready.remote() for w in self.workers])
        self.chunks_per_worker = chunks_per_worker
        self.last_stats: dict[str, float] = {}

    def _chunks(self, prompts: list[list[int]]) -> list[tuple[int, list[list[int]]]]:
        # extra chunks only balance load between engines; a lone engine is fastest with the whole
        # batch at once (halving vLLM's batch cost ~20% CPU per token, benchmarks/rollout_throughput.py)
        per_worker = self.chunks_per_worker if len(self.workers) > 1 else 1
        num_chunks = max(1, min(len(prompts), len(self.workers) * per_worker))
        bounds = [round(i * len(prompts) / num_chunks) for i in range(num_chunks + 1)]
        return [(bounds[i], prompts[bounds[i] : bounds[i + 1]]) for i in range(num_chunks)]

    def generate(self, prompts: list[list[int]], sampling: SamplingConfig, n: int = 1) -> list[list[Completion]]:
        """Blocking generation; each chunk goes to the first idle engine (load balancing)."""
        started = time.perf_counter()
        queue = self._chunks(prompts)
        idle = list(self.workers)
        pending: dict[ray.ObjectRef, tuple[int, Any]] = {}
        results: dict[int, dict] = {}
        while queue or pending:
            while queue and idle:
                start, chunk = queue.pop(0)
                worker = idle.pop(0)
                pending[worker.generate.remote(chunk, sampling, n, start)] = (start, worker)
            done, _ = ray.wait(list(pending), num_returns=1)
            start, worker = pending.pop(done[0])
            results[start] = ray.get(done[0])
            idle.append(worker)
        return self._assemble(results, started)

    def submit(self, prompts: list[list[int]], sampling: SamplingConfig, n: int = 1) -> dict[str, Any]:
        """Dispatch now, return at once (async mode); chunks are spread round-robin. See `collect`."""
        chunks = self._chunks(prompts)
        refs = {start: self.workers[i % len(self.workers)].generate.remote(chunk, sampling, n, start) for i, (start, chunk) in enumerate(chunks)}
        return {"refs": refs, "started": time.perf_counter()}

    def collect(self, job: dict[str, Any]) -> list[list[Completion]]:
        starts = sorted(job["refs"])
        outputs = ray.get([job["refs"][s] for s in starts])
        return self._assemble(dict(zip(starts, outputs)), job["started"])

    def _assemble(self, results: dict[int, dict], started: float) -> list[list[Completion]]:
        groups: list[list[Completion]] = []
        for start in sorted(results):
            groups.extend(results[start]["groups"])
        versions = {r["version"] for r in results.values()}
        if len(versions) > 1:
            raise RuntimeError(f"rollout engines served different policy versions in one batch: {sorted(versions)}")
        tokens = sum(r["tokens"] for r in results.values())
        elapsed = time.perf_counter() - started
        self.last_stats = {"rollout/tokens": float(tokens), "rollout/seconds": elapsed, "rollout/tokens_per_s": tokens / max(elapsed, 1e-9)}
        return groups

    def versions(self) -> list[int]:
        return ray.get([w.weight_version.remote() for w in self.workers])


class LearnerGroup:
    """N LearnerWorker actors forming one DeepSpeed data-parallel group."""

    def __init__(self, config: LearnerConfig, pad_id: int, actor_options: list[dict] | None = None) -> None:
        config.validate()
        remote = ray.remote(_LazyLearner)
        options = actor_options or [{"num_cpus": 1} for _ in range(config.num_ranks)]
        self.workers = [remote.options(**opt).remote() for opt in options]
        addr, port = ray.get(self.workers[0].rendezvous.remote())
        ray.get([w.setup.remote(rank, config, addr, port, pad_id) for rank, w in enumerate(self.workers)])
        self.config = config

    def shard(self, samples: list[Sample]) -> list[list[Sample]]:
        """Equal-size contiguous shards; short shards are topped up with zero-weight copies so
        every rank runs the same number of micro-batches (collectives must line up)."""
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
        results = ray.get([w.call.remote("train", shard, objective, optimizer_steps) for w, shard in zip(self.workers, shards)])
        metrics = {k: sum(r[k] for r in results) / len(results) for k in results[0] if k not in ("tokens", "tokens_per_s")}
        metrics["tokens"] = sum(r["tokens"] for r in results)
        metrics["tokens_per_s"] = metrics["tokens"] / max(max(r["seconds"] for r in results), 1e-9)
        return {f"learner/{k}": v for k, v in metrics.items()}

    def logprobs(self, samples: list[Sample]) -> list[list[float]]:
        return ray.get(self.workers[0].call.remote("logprobs", samples))

    def call_all(self, method: str, *args: Any) -> list[Any]:
        return ray.get([w.call.remote(method, *args) for w in self.workers])

    def save_checkpoint(self, directory: str, tag: str, client_state: dict[str, Any]) -> None:
        self.call_all("save_checkpoint", directory, tag, client_state)

    def load_checkpoint(self, directory: str, tag: str) -> dict[str, Any]:
        return self.call_all("load_checkpoint", directory, tag)[0]

    def save_pretrained(self, directory: str, tokenizer_path: str) -> None:
        self.call_all("save_pretrained", directory, tokenizer_path)


class _LazyLearner:
    """Creates the LearnerWorker after rank 0's address is known (DeepSpeed needs it at init)."""

    def rendezvous(self) -> tuple[str, int]:
        from cdra.runtime.cluster import node_address

        return node_address()

    def setup(self, rank: int, config: LearnerConfig, addr: str, port: int, pad_id: int) -> None:
        self.worker = LearnerWorker(rank, config, addr, port, pad_id)

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.worker, method)(*args)


class WeightSync:
    """One process group: learner rank 0 (sender) + every engine (receivers); versioned updates."""

    def __init__(self, learners: LearnerGroup, engines: list) -> None:
        self.learners = learners
        self.engines = engines
        backend = ray.get(learners.workers[0].call.remote("sync_backend"))
        addr, port = ray.get(learners.workers[0].rendezvous.remote())
        firsts, world = sync_ranks(ray.get([e.sync_width.remote() for e in engines]))
        ray.get([learners.workers[0].call.remote("init_sync_group", addr, port, world)]
                + [e.init_weight_group.remote(backend, addr, port, first, world) for e, first in zip(engines, firsts)])
        self.layout = ray.get(learners.workers[0].call.remote("weight_layout"))
        self.version = 0

    def push(self, version: int) -> float:
        """Broadcast the learner's weights as `version`; returns once every engine acknowledged."""
        started = time.perf_counter()
        senders = [w.call.remote("broadcast_weights", version) for w in self.learners.workers]
        acks = ray.get([e.receive_weights.remote(version, self.layout) for e in self.engines] + senders)
        engine_acks = acks[: len(self.engines)]
        if any(a != version for a in engine_acks):
            raise RuntimeError(f"weight sync v{version}: engines acknowledged {engine_acks}")
        self.version = version
        return time.perf_counter() - started
