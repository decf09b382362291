"""LearnerWorker: one DeepSpeed engine per rank, as a Ray actor.

The driver hands each rank a shard of collated samples and an `Objective` (which loss, with
which knobs). The worker micro-batches the shard, accumulates gradients with DeepSpeed in
caller-owned mode (one `engine.step()` per optimizer step, whatever the shard size), and
returns metrics. Rank 0 also owns the weight broadcast to the rollout engines.

Every micro-batch's loss is divided by the loss units (sequences, tokens or labelled steps, see
`cdra.runtime.objectives`) of its whole optimizer step summed over all ranks, so the step's
gradient is the full batch's whatever the sharding, micro-batching or filler rows.

The model is built for `LearnerConfig.head` (`cdra.models.heads`): a causal LM, a causal LM with
a critic (PPO), or a token classifier (PRM). Rollout engines receive the causal LM only;
checkpoints and `save_pretrained` hold every part.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from cdra.algos.experience import Sample, collate, split_microbatches
from cdra.models import heads
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
    # what is trained on top of the trunk (Objective.head names the one an objective needs):
    # "lm", "lm+value" (PPO: + a critic started from `critic_path`, default model_path, e.g. a
    # PRM directory) or "classifier" (PRM: a token classifier with `num_labels` = K+1 classes)
    head: Literal["lm", "lm+value", "classifier"] = "lm"
    num_labels: int = 2
    critic_path: str = ""
    # "cosine": linear warm-up over `warmup_steps`, then cosine decay to `min_lr_ratio` * lr at
    # `total_steps` (the recipe sets it to its planned optimizer steps); "constant": lr throughout
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    total_steps: int = 0
    min_lr_ratio: float = 0.1
    nonfinite: Literal["raise", "skip"] = field(default="raise", metadata={"help": "a non-finite loss: raise (stop the run before the update) or skip that micro-batch and count it (learner/nonfinite_skipped); a non-finite gradient or weight always raises"})

    def validate(self) -> None:
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage must be 0-3, got {self.zero_stage}")
        if self.num_ranks < 1 or self.micro_batch_size < 1:
            raise ValueError("num_ranks and micro_batch_size must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.lr_schedule == "cosine" and self.total_steps < 1:
            raise ValueError("lr_schedule=cosine needs total_steps >= 1")
        if self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("warmup_steps must be >= 0 and min_lr_ratio in [0, 1]")
        if self.head not in heads.HEADS:
            raise ValueError(f"learner.head must be one of {heads.HEADS}, got {self.head!r}")
        if self.head == "classifier" and self.num_labels < 2:
            raise ValueError(f"learner.num_labels must be >= 2 (K+1 step classes) for head=classifier, got {self.num_labels}")
        if self.critic_path and self.head != "lm+value":
            raise ValueError(f"learner.critic_path applies to head=lm+value only (head is {self.head!r})")


def lr_factor(step: int, config: LearnerConfig) -> float:
    """Multiplier of `config.lr` at optimizer step `step` (0-based)."""
    if config.lr_schedule == "constant":
        return 1.0
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.total_steps - config.warmup_steps))
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


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

        if not self.on_gpu:
            _skip_shm_inference_op(deepspeed)
        _init_process_group(rank, config.num_ranks, master_addr, master_port, "nccl" if self.on_gpu else "gloo")
        deepspeed.init_distributed(dist_backend="nccl" if self.on_gpu else "gloo", auto_mpi_discovery=False)  # adopts the group above
        torch.manual_seed(config.seed + rank)
        self.dtype = resolve_dtype(config.dtype, self.on_gpu)
        model = self._build_model()
        if config.gradient_checkpointing:
            for part in model.children() if isinstance(model, heads.ActorCritic) else [model]:
                part.gradient_checkpointing_enable()
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
        # DeepSpeed steps the scheduler with every optimizer step and checkpoints its state
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=schedule,
                                                                 config=self._ds_config())
        self.device = self.engine.device
        self.version = 0
        self.sync_group = None
        self.broadcast_pause_s = 0.0  # fault injection only (`pause_broadcasts`)

    def _build_model(self) -> torch.nn.Module:
        c = self.config
        return heads.load_model(c.model_path, c.head, self.dtype, num_labels=c.num_labels, critic_path=c.critic_path, seed=c.seed)

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
        if objective.head != self.config.head:
            raise ValueError(f"objective {objective.kind!r} trains head {objective.head!r}, but this learner was built with "
                             f"learner.head={self.config.head!r}")
        started = time.perf_counter()
        self.engine.train()
        batch = collate(samples, self.pad_id)
        if objective.needs_old_logprobs:
            batch["old_logprobs"] = self._old_logprobs(batch, objective)
        if objective.kind == "ppo":
            batch.update(objectives.ppo_targets(batch, self.values_of_batch(batch), objective))
        totals: dict[str, float] = {}
        tokens = skipped = 0
        # the shuffle is a function of the optimizer step count, which a DeepSpeed checkpoint
        # restores: a resumed run shuffles as the uninterrupted one did
        shuffle_rng = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.rank * 7_919 + self.engine.global_steps)
        for _ in range(objective.epochs):
            order = torch.randperm(len(samples), generator=shuffle_rng) if objective.shuffle else torch.arange(len(samples))
            shuffled = {k: v[order] for k, v in batch.items()}
            for step_rows in torch.tensor_split(torch.arange(len(samples)), optimizer_steps):
                if len(step_rows) == 0:
                    continue
                part = {k: v[step_rows] for k, v in shuffled.items()}
                micro = split_microbatches(part, self.config.micro_batch_size)
                step_number = self.engine.global_steps + 1
                bad = 0  # micro-batches of this step with a non-finite loss
                # DeepSpeed averages gradients over ranks: x num_ranks makes it the global sum / units
                units = self._sum_over_ranks(sum(objectives.loss_units(mb, objective) for mb in micro))
                scale = self.config.num_ranks / max(units, 1)
                for mb in micro:
                    mb = {k: v.to(self.device) for k, v in mb.items()}
                    loss, metrics = objectives.compute_loss(self.engine, mb, objective)
                    if not torch.isfinite(loss.detach()).all():
                        # backward a zero that reaches every weight instead: the ZeRO hooks and
                        # collectives of every rank stay in line, and nothing non-finite is reduced
                        bad += 1
                        loss = _zero_loss(self.engine.module)
                    else:
                        for k, v in metrics.items():
                            totals[k] = totals.get(k, 0.0) + v * mb["input_ids"].shape[0]
                    self.engine.backward(loss * scale, scale_wrt_gas=False)
                    tokens += int(mb["attention_mask"].sum())
                bad_anywhere = self._sum_over_ranks(bad)
                skipped += bad
                if bad_anywhere and self.config.nonfinite == "raise":
                    raise FloatingPointError(
                        f"learner rank {self.rank}: non-finite loss at optimizer step {step_number} ({bad_anywhere} micro-batch(es) "
                        f"over all ranks); stopped before that update, no weights changed. Lower learner.lr, or set "
                        f"learner.nonfinite=skip to skip such micro-batches")
                # ZeRO 0/1 report no global norm: read it off the (already reduced) grads before
                # step() clears them; ZeRO 2/3 keep grads in partitions and report it themselves
                local_norm = _local_grad_norm(self.engine.module) if self.config.zero_stage < 2 else float("nan")
                self.engine.step()
                norm = self.engine.get_global_grad_norm()
                norm = local_norm if norm is None else float(norm)
                self._check_finite_update(step_number, norm)
                totals["grad_norm"] = totals.get("grad_norm", 0.0) + norm * len(samples) / optimizer_steps
        n = len(samples) * objective.epochs
        out = {k: v / n for k, v in totals.items()}
        out["nonfinite_skipped"] = float(skipped)
        elapsed = time.perf_counter() - started
        out.update(tokens=float(tokens), seconds=elapsed, tokens_per_s=tokens / max(elapsed, 1e-9))
        return out

    def _sum_over_ranks(self, count: int) -> int:
        if self.config.num_ranks == 1:
            return count
        import torch.distributed as dist

        total = torch.tensor([count], dtype=torch.int64, device=self.device)
        dist.all_reduce(total)
        return int(total.item())

    def _check_finite_update(self, step_number: int, grad_norm: float) -> None:
        """A non-finite gradient (finite loss, e.g. an overflow) or an update that left a weight
        non-finite (lr=1e30) stops the run here, before any checkpoint or final model holds it."""
        if math.isnan(grad_norm) and self.config.zero_stage >= 2:  # ZeRO 2/3 report nan only for a bad gradient
            problem = "non-finite gradient"
        elif math.isinf(grad_norm):
            problem = "non-finite gradient"
        else:
            params = [getattr(p, "ds_tensor", p) for p in self.engine.module.parameters()]
            problem = "" if all(bool(torch.isfinite(p.detach()).all()) for p in params) else "non-finite weights after the update"
        if self._sum_over_ranks(int(bool(problem))):
            raise FloatingPointError(
                f"learner rank {self.rank}: {problem or 'a non-finite update on another rank'} at optimizer step {step_number} "
                f"(grad norm {grad_norm}); the run stops and saves no model. Lower learner.lr or check the data")

    def _old_logprobs(self, batch: dict[str, torch.Tensor], objective: objectives.Objective) -> torch.Tensor:
        if objective.old_logprobs_source == "learner" or objective.is_cap is not None:
            return self.logprobs_of_batch(batch)
        if "rollout_logprobs" not in batch:
            raise ValueError("old_logprobs_source=rollout but some samples carry no rollout logprobs")
        return batch["rollout_logprobs"]

    def logprobs_of_batch(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-label log-probs under the current weights (old policy for PPO-style ratios)."""
        return self._per_label(batch, objectives.label_logprobs)

    def values_of_batch(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The critic's per-label values under the current weights (PPO's old values)."""
        return self._per_label(batch, objectives.label_values)

    @torch.no_grad()
    def _per_label(self, batch: dict[str, torch.Tensor], score: Callable[[Any, dict[str, torch.Tensor]], torch.Tensor]) -> torch.Tensor:
        self.engine.eval()
        out = torch.zeros(batch["labels"].shape, dtype=torch.float32)
        rows = torch.arange(batch["input_ids"].shape[0])
        for idx in torch.split(rows, self.config.micro_batch_size):
            mb = {k: v[idx].to(self.device) for k, v in batch.items()}
            values = score(self.engine, mb)
            out[idx, : values.shape[1]] = values.float().cpu()
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
        """Full parameters. Under ZeRO-3 every rank must call this together: each parameter is
        gathered on its own and copied to host memory, so no rank ever holds the whole model
        on its device."""
        module = self.engine.module
        if self.config.zero_stage != 3:
            return {n: p.detach() for n, p in module.named_parameters()}
        out = {}
        for name, param in module.named_parameters():
            with self._gathered([param]):
                out[name] = param.detach().to("cpu", copy=True)
        return out

    def _gathered(self, params: list[torch.nn.Parameter]) -> contextlib.AbstractContextManager:
        """ZeRO-3: the full `params` inside the block (a collective: all ranks, same order)."""
        if self.config.zero_stage != 3:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=None)

    def _bucket_flats(self, buckets: list[BucketSpec]) -> Iterator[torch.Tensor | None]:
        """One flat tensor per bucket, built when asked for: under ZeRO-3 only one bucket's
        parameters are gathered at a time (ranks other than 0 join each gather, then drop it)."""
        params = dict(heads.policy_of(self.engine.module).named_parameters())
        for bucket in buckets:
            group = [params[t.name] for t in bucket.tensors]
            with self._gathered(group):
                flat = torch.cat([p.detach().reshape(-1) for p in group]).to(self.device) if self.rank == 0 else None
            yield flat

    def weight_layout(self) -> list[BucketSpec]:
        policy = heads.policy_of(self.engine.module)
        shapes = [(n, tuple(p.ds_shape) if hasattr(p, "ds_shape") else tuple(p.shape), p.dtype) for n, p in policy.named_parameters()]
        return plan_buckets(shapes, self.config.sync_bucket_mb << 20)

    def sync_backend(self) -> str:
        return "nccl" if self.on_gpu else "gloo"

    def init_sync_group(self, master_addr: str, master_port: int, world_size: int) -> None:
        if self.rank == 0:
            self.sync_group = init_group(self.sync_backend(), master_addr, master_port, 0, world_size)

    def broadcast_weights(self, version: int, tamper_bucket: int | None = None) -> float:
        """Gather (all ranks, bucket by bucket) and broadcast (rank 0) the weights; returns seconds spent.

        `tamper_bucket` corrupts that bucket after its checksum is taken (fault injection for tests).
        """
        started = time.perf_counter()
        flats = self._bucket_flats(self.weight_layout())
        if self.rank == 0:
            if self.sync_group is None:
                raise RuntimeError("broadcast_weights before init_sync_group")
            broadcast_buckets(self.sync_group, flats, tamper_bucket, self.broadcast_pause_s)
        elif self.config.zero_stage == 3:
            for _ in flats:  # the gathers are collectives: follow rank 0 through every bucket
                pass
        self.version = version
        return time.perf_counter() - started

    def pause_broadcasts(self, seconds: float) -> None:
        """Fault injection for tests: every later broadcast waits `seconds` after its first
        bucket, long enough to kill an engine inside it (see `broadcast_buckets`)."""
        self.broadcast_pause_s = seconds

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
        """Write HF model directories (rank 0) that transformers loads directly, and vLLM too
        for the causal LM: `directory`, plus `directory/critic` (a token classifier) for
        lm+value; a classifier head exports as AutoModelForTokenClassification."""
        named = self.named_weights()
        if self.rank != 0:
            return
        from transformers import AutoTokenizer

        model = self._build_model()
        # tied weights (lm_head = embeddings) are one parameter, named once: strict would miss the alias
        unexpected = model.load_state_dict(named, strict=False).unexpected_keys
        if unexpected:
            raise RuntimeError(f"save_pretrained: the learner holds weights its head has no place for: {unexpected[:3]}")
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        for written in heads.save_model(model, directory):
            tokenizer.save_pretrained(written)


def _zero_loss(module: torch.nn.Module) -> torch.Tensor:
    """0, as a function of every trainable weight (so every gradient hook fires with zeros)."""
    return sum((p.sum() * 0.0 for p in module.parameters() if p.requires_grad), torch.zeros(()))


def _local_grad_norm(module: torch.nn.Module) -> float:
    grads = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else float("nan")


def _skip_shm_inference_op(deepspeed) -> None:
    """On CPU, DeepSpeed's comm backend JIT-compiles its shared-memory all-reduce op at start-up
    (tens of seconds on a fresh machine, and a build killed midway leaves a lock that blocks every
    later learner). Only inference all-reduce uses it; training goes through the gloo group, so
    mark the op unavailable and never build it."""
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


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
