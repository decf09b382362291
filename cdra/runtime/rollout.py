"""RolloutWorker: one vLLM engine in a Ray actor, token-in/token-out with per-token logprobs.

The engine runs in the actor's own process (no engine-core subprocess), so the weight-sync
worker extension lives in the actor and joins the learner's process group directly.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from cdra.runtime.weight_sync import BucketSpec


@dataclass
class EngineConfig:
    model_path: str = ""
    max_model_len: int = 1024
    dtype: str = "auto"  # float32 on CPU, bfloat16 on GPU
    gpu_memory_utilization: float = 0.5
    kv_cache_gb: int = 1  # CPU only: VLLM_CPU_KVCACHE_SPACE
    cpu_threads: int = 1  # CPU only: OpenMP threads of this engine (engines share the cores)
    enforce_eager: bool = True
    seed: int = 0
    tensor_parallel_size: int = 1  # GPUs per engine (vLLM tensor parallelism); 1 on CPU
    max_logprobs: int = 20  # the largest top-k of log-probs a judge call may ask for

    def validate(self) -> None:
        if self.max_model_len < 16:
            raise ValueError(f"max_model_len too small: {self.max_model_len}")
        if self.cpu_threads < 1:
            raise ValueError("cpu_threads must be >= 1")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")

    def gpus_per_engine(self, on_gpu: bool) -> float:
        """GPUs to reserve for one engine: its tensor-parallel degree on GPU, none on CPU."""
        return float(self.tensor_parallel_size) if on_gpu else 0.0


@dataclass
class SamplingConfig:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    min_tokens: int = 0
    stop: list[str] = field(default_factory=list)
    include_stop_str_in_output: bool = True
    logprobs: bool = True
    seed: int | None = None

    def validate(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_tokens < 1:
            raise ValueError(f"bad sampling config: {self}")


@dataclass
class Completion:
    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float] | None
    text: str
    finish_reason: str
    policy_version: int


def _judgement(output: Any, top_logprobs: int) -> Any:
    """A vLLM CompletionOutput as a `Judgement` (log-probs as plain {token id: log-prob})."""
    from cdra.rewards.judging import Judgement

    table = None
    if top_logprobs > 0 and output.logprobs is not None:
        table = [{int(t): float(lp.logprob) for t, lp in position.items()} for position in output.logprobs]
    return Judgement(output.text, list(output.token_ids), table, str(output.finish_reason))


def engine_env(config: EngineConfig) -> dict[str, str]:
    """Environment for a rollout actor; on CPU pins the engine's thread count."""
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TOKENIZERS_PARALLELISM": "false"}
    env.update(
        VLLM_CPU_KVCACHE_SPACE=str(config.kv_cache_gb),
        VLLM_CPU_OMP_THREADS_BIND="nobind",
        OMP_NUM_THREADS=str(config.cpu_threads),
    )
    return env


class RolloutWorker:
    """Ray actor body (see `cdra.runtime.group.RolloutPool`)."""

    def __init__(self, config: EngineConfig, worker_index: int = 0) -> None:
        os.environ.update(engine_env(config))
        import torch
        from vllm import LLM

        on_gpu = torch.cuda.is_available()
        if not on_gpu:
            # OMP_NUM_THREADS above comes too late: Ray's worker has already imported torch
            # (with Ray's own OMP_NUM_THREADS) to unpickle this class. vLLM's CPU worker
            # disables set_num_threads once the engine exists, so it must happen here.
            torch.set_num_threads(config.cpu_threads)
        if not on_gpu and config.tensor_parallel_size != 1:
            raise ValueError(f"tensor_parallel_size={config.tensor_parallel_size} needs GPUs; a CPU engine runs with 1")
        dtype = config.dtype if config.dtype != "auto" else ("bfloat16" if on_gpu else "float32")
        self.worker_index = worker_index
        self.on_gpu = on_gpu
        self.llm = LLM(
            model=config.model_path,
            dtype=dtype,
            max_model_len=config.max_model_len,
            enforce_eager=config.enforce_eager,
            seed=config.seed + worker_index,
            gpu_memory_utilization=config.gpu_memory_utilization,
            worker_extension_cls="cdra.runtime.weight_sync.WeightReceiverExtension",
            disable_log_stats=True,
            tensor_parallel_size=config.tensor_parallel_size,
            max_logprobs=config.max_logprobs,
            # Inside a Ray placement group vLLM would choose its Ray executor and ask for GPU
            # bundles of its own; this actor already holds the engine's GPUs, so use processes.
            distributed_executor_backend="mp" if config.tensor_parallel_size > 1 else None,
        )
        self.tensor_parallel_size = config.tensor_parallel_size
        self.max_model_len = config.max_model_len
        self.version = 0
        self.sync_generation: int | None = None
        self.generated_tokens = 0
        self.judge_calls = 0

    def ready(self) -> int:
        return self.worker_index

    def pid(self) -> int:
        return os.getpid()

    def generate(self, prompts: list[list[int]], sampling: SamplingConfig, n: int = 1, seed_offset: int = 0) -> dict[str, Any]:
        """`n` samples for each prompt; returns completions grouped per prompt plus timing."""
        from vllm import SamplingParams

        started = time.perf_counter()
        requests, params = [], []
        for i, ids in enumerate(prompts):
            if len(ids) >= self.max_model_len:
                raise ValueError(f"prompt {i} has {len(ids)} tokens, max_model_len is {self.max_model_len}")
            # vLLM 0.32's CPU runner crashes on per-request generators when a sampled token is
            # discarded ("CPU Generator does not use offset"); on CPU the engine seed is used.
            seed = None if sampling.seed is None or not self.on_gpu else sampling.seed + seed_offset + i
            params.append(SamplingParams(
                n=n, temperature=sampling.temperature, top_p=sampling.top_p,
                max_tokens=min(sampling.max_tokens, self.max_model_len - len(ids)),
                min_tokens=sampling.min_tokens, stop=list(sampling.stop) or None,
                include_stop_str_in_output=sampling.include_stop_str_in_output,
                logprobs=0 if sampling.logprobs else None, seed=seed,
            ))
            requests.append({"prompt_token_ids": list(ids)})
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        groups: list[list[Completion]] = []
        tokens = 0
        for ids, out in zip(prompts, outputs):
            group = []
            for c in out.outputs:
                response = list(c.token_ids)
                tokens += len(response)
                logprobs = [lp[t].logprob for lp, t in zip(c.logprobs, response)] if sampling.logprobs and c.logprobs else None
                group.append(Completion(list(ids), response, logprobs, c.text, str(c.finish_reason), self.version))
            groups.append(group)
        self.generated_tokens += tokens
        return {"groups": groups, "tokens": tokens, "seconds": time.perf_counter() - started, "version": self.version}

    # weight sync -------------------------------------------------------------

    def sync_width(self) -> int:
        """Ranks this engine takes in the weight-sync group: one per tensor-parallel worker."""
        return self.tensor_parallel_size

    def init_weight_group(self, backend: str, master_addr: str, master_port: int, first_rank: int, world_size: int,
                          generation: int = 0) -> None:
        """Join (or re-join, after a restart of any member) the weight-sync group `generation`."""
        self.llm.collective_rpc("cdra_init_weight_group", args=(backend, master_addr, master_port, first_rank, world_size))
        self.sync_generation = generation

    def sync_state(self) -> tuple[int | None, int]:
        """(weight-sync group generation, policy version); (None, 0) in a freshly (re)started actor."""
        return self.sync_generation, self.version

    def receive_weights(self, version: int, buckets: list[BucketSpec]) -> int:
        """Blocks until the learner's broadcast arrives; acknowledges with the new version."""
        self.llm.collective_rpc("cdra_receive_weights", args=(version, buckets))
        self.llm.reset_prefix_cache()  # cached KV was computed with the old weights
        self.version = version
        return version

    def weight_version(self) -> int:
        return self.version

    # judging -----------------------------------------------------------------

    def judge(self, prompts: list[list[int]], sampling: SamplingConfig, n: int = 1, top_logprobs: int = 0,
              time_limit_s: float = 60.0) -> dict[str, Any]:
        """`n` judgements per prompt, with the top-`top_logprobs` log-probs at every generated
        position, within one time limit for the whole call.

        Drives the engine step by step (what `LLM.generate` does inside) so that requests still
        running at the deadline are aborted and the engine is free for the next call. Each
        prompt's entry is its list of `Judgement`s, or a `JudgeError` (too long, timed out).
        """
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        from cdra.rewards.judging import JudgeError, Judgement

        started = time.perf_counter()
        self.judge_calls += 1
        engine = self.llm.llm_engine
        results: list[list[Judgement] | JudgeError | None] = [None] * len(prompts)
        live: dict[str, int] = {}
        for i, ids in enumerate(prompts):
            if len(ids) >= self.max_model_len:
                results[i] = JudgeError("error", f"judge prompt has {len(ids)} tokens, max_model_len is {self.max_model_len}")
                continue
            params = SamplingParams(
                n=n, temperature=sampling.temperature, top_p=sampling.top_p,
                max_tokens=min(sampling.max_tokens, self.max_model_len - len(ids)), min_tokens=sampling.min_tokens,
                stop=list(sampling.stop) or None, include_stop_str_in_output=sampling.include_stop_str_in_output,
                logprobs=top_logprobs if top_logprobs > 0 else None, output_kind=RequestOutputKind.FINAL_ONLY,
            )
            request_id = f"judge-{self.judge_calls}-{i}"
            engine.add_request(request_id, {"prompt_token_ids": list(ids)}, params)
            live[request_id] = i
        deadline = time.monotonic() + time_limit_s
        while live and time.monotonic() < deadline:
            for out in engine.step():
                if out.finished and out.request_id in live:
                    results[live.pop(out.request_id)] = [_judgement(c, top_logprobs) for c in out.outputs]
        if live:
            engine.abort_request(list(live))
            for i in live.values():
                results[i] = JudgeError("timeout", f"judge timed out after {time_limit_s:g}s")
        return {"results": results, "seconds": time.perf_counter() - started, "version": self.version}

    def param_checksum(self) -> float:
        return float(self.llm.collective_rpc("cdra_param_checksum")[0])
