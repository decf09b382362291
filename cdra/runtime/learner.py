"""LearnerWorker: one DeepSpeed engine per rank, as a Ray actor.

The driver hands each rank a shard of collated samples and an `Objective` (which loss, with
which knobs). The worker micro-batches the shard, accumulates gradients with DeepSpeed in
caller-owned mode (one `engine.step()` per optimizer step, whatever the shard size), and
returns metrics. Rank 0 also owns the weight broadcast to the rollout engines.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from cdra.algos.experience import Sample, collate, split_microbatches
from cdra.runtime import objectives
from cdra.runtime.weight_sync import BucketSpec, broadcast_buckets, init_group, plan_buckets


@dataclass
class LearnerConfig:
    model_path: str = ""
    num_ranks: int = 1
    zero_stage: int = 0
    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    micro_batch_size: int = 8
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    gradient_checkpointing: bool = False
    seed: int = 0
    sync_bucket_mb: int = 16  # small enough that transfer and engine reload overlap (benchmarks/weight_sync.py)
    num_cpus_per_rank: float = 1.0
    extra_ds_config: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage must be 0-3, got {self.zero_stage}")
        if self.num_ranks < 1 or self.micro_batch_size < 1:
            raise ValueError("num_ranks and micro_batch_size must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def resolve_dtype(name: str, on_gpu: bool) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if on_gpu else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


class LearnerWorker:
    """Ray actor body (wrapped with ray.remote by LearnerGroup)."""

    def __init__(self, rank: int, config: LearnerConfig, master_addr: str, master_port: int, pad_id: int) -> None:
        self.rank = rank
        self.config = config
        self.pad_id = pad_id
        self.on_gpu = torch.cuda.is_available()
        os.environ.update(
            RANK=str(rank), LOCAL_RANK="0", WORLD_SIZE=str(config.num_ranks),
            MASTER_ADDR=master_addr, MASTER_PORT=str(master_port),
        )
        if not self.on_gpu:
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed
        from transformers import AutoModelForCausalLM

        _init_process_group(rank, config.num_ranks, master_addr, master_port, "nccl" if self.on_gpu else "gloo")
        deepspeed.init_distributed(dist_backend="nccl" if self.on_gpu else "gloo", auto_mpi_discovery=False)  # adopts the group above
        torch.manual_seed(config.seed + rank)
        self.dtype = resolve_dtype(config.dtype, self.on_gpu)
        model = AutoModelForCausalLM.from_pretrained(config.model_path, dtype=self.dtype)
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=self._ds_config())
        self.device = self.engine.device
        self.version = 0
        self.sync_group = None

    def _ds_config(self) -> dict[str, Any]:
        c = self.config
        ds: dict[str, Any] = {
            "train_micro_batch_size_per_gpu": c.micro_batch_size,
            "gradient_accumulation_steps": 1,
            "managed_gradient_accumulation": False,  # the worker decides when a step ends
            "gradient_clipping": c.grad_clip,
            "zero_optimization": {"stage": c.zero_stage},
            "bf16": {"enabled": self.dtype == torch.bfloat16},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        ds.update(c.extra_ds_config)
        return ds

    # ------------------------------------------------------------------ training

    def train(self, samples: list[Sample], objective: objectives.Objective, optimizer_steps: int = 1) -> dict[str, float]:
        """Run `objective.epochs` passes over the shard, split into `optimizer_steps` updates per pass."""
        if not samples:
            raise ValueError(f"learner rank {self.rank}: empty shard")
        started = time.perf_counter()
        self.engine.train()
        batch = collate(samples, self.pad_id)
        if objective.needs_old_logprobs:
            batch["old_logprobs"] = self._old_logprobs(batch, objective)
        totals: dict[str, float] = {}
        tokens = 0
        for _ in range(objective.epochs):
            order = torch.randperm(len(samples)) if objective.shuffle else torch.arange(len(samples))
            shuffled = {k: v[order] for k, v in batch.items()}
            for step_rows in torch.tensor_split(torch.arange(len(samples)), optimizer_steps):
                if len(step_rows) == 0:
                    continue
                part = {k: v[step_rows] for k, v in shuffled.items()}
                micro = split_microbatches(part, self.config.micro_batch_size)
                for mb in micro:
                    mb = {k: v.to(self.device) for k, v in mb.items()}
                    loss, metrics = objectives.compute_loss(self.engine, mb, objective)
                    # each micro-batch weighs by its share of the step's rows
                    self.engine.backward(loss * (mb["input_ids"].shape[0] / len(step_rows)), scale_wrt_gas=False)
                    tokens += int(mb["attention_mask"].sum())
                    for k, v in metrics.items():
                        totals[k] = totals.get(k, 0.0) + v * mb["input_ids"].shape[0]
                # ZeRO 0/1 report no global norm: read it off the (already reduced) grads before
                # step() clears them; ZeRO 2/3 keep grads in partitions and report it themselves
                local_norm = _local_grad_norm(self.engine.module) if self.config.zero_stage < 2 else float("nan")
                self.engine.step()
                norm = self.engine.get_global_grad_norm()
                norm = local_norm if norm is None else float(norm)
                totals["grad_norm"] = totals.get("grad_norm", 0.0) + norm * len(samples) / optimizer_steps
        n = len(samples) * objective.epochs
        out = {k: v / n for k, v in totals.items()}
        elapsed = time.perf_counter() - started
        out.update(tokens=float(tokens), seconds=elapsed, tokens_per_s=tokens / max(elapsed, 1e-9))
        return out

    def _old_logprobs(self, batch: dict[str, torch.Tensor], objective: objectives.Objective) -> torch.Tensor:
        if objective.old_logprobs_source == "learner" or objective.is_cap is not None:
            return self.logprobs_of_batch(batch)
        if "rollout_logprobs" not in batch:
            raise ValueError("old_logprobs_source=rollout but some samples carry no rollout logprobs")
        return batch["rollout_logprobs"]

    @torch.no_grad()
    def logprobs_of_batch(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-label log-probs under the current weights (old policy for PPO-style ratios)."""
        self.engine.eval()
        out = torch.zeros(batch["labels"].shape, dtype=torch.float32)
        rows = torch.arange(batch["input_ids"].shape[0])
        for idx in torch.split(rows, self.config.micro_batch_size):
            mb = {k: v[idx].to(self.device) for k, v in batch.items()}
            lp = objectives.label_logprobs(self.engine, mb)
            out[idx, : lp.shape[1]] = lp.float().cpu()
        self.engine.train()
        return out

    def logprobs(self, samples: list[Sample]) -> list[list[float]]:
        """Response-token log-probs for each sample (used by the reference role too)."""
        batch = collate(samples, self.pad_id)
        lp = self.logprobs_of_batch(batch)
        starts = [len(s.prompt_ids) - 1 for s in samples]
        return [lp[i, st : st + len(s.response_ids)].tolist() for i, (s, st) in enumerate(zip(samples, starts))]

    # ------------------------------------------------------------------ weights

    def named_weights(self) -> dict[str, torch.Tensor]:
        """Full (gathered) parameters; under ZeRO-3 every rank must call this together."""
        module = self.engine.module
        if self.config.zero_stage == 3:
            import deepspeed

            params = list(module.parameters())
            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                return {n: p.detach().clone() for n, p in module.named_parameters()}
        return {n: p.detach() for n, p in module.named_parameters()}

    def weight_layout(self) -> list[BucketSpec]:
        shapes = [(n, tuple(p.ds_shape) if hasattr(p, "ds_shape") else tuple(p.shape), p.dtype) for n, p in self.engine.module.named_parameters()]
        return plan_buckets(shapes, self.config.sync_bucket_mb << 20)

    def sync_backend(self) -> str:
        return "nccl" if self.on_gpu else "gloo"

    def init_sync_group(self, master_addr: str, master_port: int, world_size: int) -> None:
        if self.rank == 0:
            self.sync_group = init_group(self.sync_backend(), master_addr, master_port, 0, world_size)

    def broadcast_weights(self, version: int) -> float:
        """Gather (all ranks) and broadcast (rank 0) the weights; returns seconds spent."""
        started = time.perf_counter()
        named = self.named_weights()
        if self.rank == 0:
            if self.sync_group is None:
                raise RuntimeError("broadcast_weights before init_sync_group")
            broadcast_buckets(self.sync_group, self.weight_layout(), named, self.device)
        self.version = version
        return time.perf_counter() - started

    def state_checksum(self) -> float:
        return float(sum(p.double().sum() for p in self.named_weights().values()))

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, directory: str, tag: str, client_state: dict[str, Any]) -> None:
        self.engine.save_checkpoint(directory, tag=tag, client_state=client_state)

    def load_checkpoint(self, directory: str, tag: str) -> dict[str, Any]:
        _, client_state = self.engine.load_checkpoint(directory, tag=tag)
        if client_state is None:
            raise FileNotFoundError(f"no learner checkpoint {tag!r} in {directory}")
        self.version = int(client_state.get("version", 0))
        return client_state

    def save_pretrained(self, directory: str, tokenizer_path: str) -> None:
        """Write an HF model directory (rank 0) that vLLM and transformers load directly."""
        named = self.named_weights()
        if self.rank != 0:
            return
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(self.config.model_path, dtype=self.dtype)
        model.load_state_dict(named, strict=False)
        model.save_pretrained(directory, safe_serialization=True)
        AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(directory)


def _local_grad_norm(module: torch.nn.Module) -> float:
    grads = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else float("nan")


def _init_process_group(rank: int, world_size: int, master_addr: str, master_port: int, backend: str) -> None:
    """The DeepSpeed group's rendezvous, listening on `master_addr` only (torch's env:// store
    binds every interface); gloo's pairs are kept to the same interface."""
    import datetime

    import torch.distributed as dist

    from cdra.runtime.cluster import bound_store, gloo_interface, local_address_towards

    interface = gloo_interface(local_address_towards(master_addr))
    if interface:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", interface)
    store = bound_store(master_addr, master_port, world_size, rank == 0, datetime.timedelta(minutes=30))
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size)
