"""Weight broadcast from learner rank 0 to vLLM engines over one torch.distributed group.

The sender flattens parameters into buckets of at most `bucket_bytes`, announces the bucket
layout (names, shapes, dtypes) through Ray, then broadcasts each flat bucket. Receivers are
vLLM workers extended with `WeightReceiverExtension`; they unflatten each bucket and feed the
tensors to the engine's in-place `reload_weights`. Gloo on CPU, NCCL on GPU; same code.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
import torch.distributed as dist

_GROUP_TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # str(torch.dtype) keeps the spec picklable and readable

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class BucketSpec:
    dtype: str
    tensors: tuple[TensorSpec, ...]

    @property
    def numel(self) -> int:
        return sum(t.numel for t in self.tensors)


def plan_buckets(named_shapes: Iterable[tuple[str, tuple[int, ...], torch.dtype]], bucket_bytes: int) -> list[BucketSpec]:
    """Group tensors, in order, into same-dtype buckets of at most `bucket_bytes` (one tensor may exceed it)."""
    buckets: list[BucketSpec] = []
    current: list[TensorSpec] = []
    current_bytes = 0
    current_dtype: torch.dtype | None = None
    for name, shape, dtype in named_shapes:
        spec = TensorSpec(name, tuple(shape), str(dtype))
        size = spec.numel * torch.empty((), dtype=dtype).element_size()
        if current and (dtype != current_dtype or current_bytes + size > bucket_bytes):
            buckets.append(BucketSpec(str(current_dtype), tuple(current)))
            current, current_bytes = [], 0
        current.append(spec)
        current_bytes += size
        current_dtype = dtype
    if current:
        buckets.append(BucketSpec(str(current_dtype), tuple(current)))
    return buckets


def to_dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype in bucket spec: {name}")
    return dtype


def unflatten(flat: torch.Tensor, bucket: BucketSpec) -> Iterator[tuple[str, torch.Tensor]]:
    offset = 0
    for spec in bucket.tensors:
        yield spec.name, flat[offset : offset + spec.numel].view(spec.shape)
        offset += spec.numel


def init_group(backend: str, master_addr: str, master_port: int, rank: int, world_size: int) -> dist.ProcessGroup:
    """A process group of its own (not the default one), so it can coexist with DeepSpeed's and vLLM's.

    Its store and gloo pairs listen on this host's address towards `master_addr` (loopback on a
    single machine), not on every interface.
    """
    from cdra.runtime.cluster import bound_store, local_address_towards

    store = bound_store(master_addr, master_port, world_size, rank == 0, _GROUP_TIMEOUT)
    if backend == "gloo":
        options = dist.ProcessGroupGloo._Options()
        options._timeout = _GROUP_TIMEOUT
        options._devices = [dist.ProcessGroupGloo.create_device(hostname=local_address_towards(master_addr))]
        options._threads = 2  # what torch's own new_group gives one gloo device
        return dist.ProcessGroupGloo(store, rank, world_size, options)
    if backend == "nccl":
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = _GROUP_TIMEOUT
        group = dist.ProcessGroupNCCL(store, rank, world_size, options)
        return group
    raise ValueError(f"weight sync backend must be gloo or nccl, got {backend!r}")


def broadcast_buckets(group: dist.ProcessGroup, buckets: list[BucketSpec], named_tensors: dict[str, torch.Tensor], device: torch.device) -> None:
    """Sender side (rank 0): flatten each bucket and broadcast it.

    Bucket k+1 is flattened while bucket k is on the wire (at most two buckets in memory).
    """
    in_flight: list[tuple[dist.Work, torch.Tensor]] = []  # the buffer stays referenced until its send is done
    for bucket in buckets:
        flat = torch.cat([named_tensors[t.name].detach().reshape(-1) for t in bucket.tensors]).to(device)
        in_flight.append((group.broadcast(flat, 0), flat))
        if len(in_flight) > 1:
            in_flight.pop(0)[0].wait()
    for work, _ in in_flight:
        work.wait()


def receive_buckets(group: dist.ProcessGroup, buckets: list[BucketSpec], device: torch.device) -> Iterator[tuple[str, torch.Tensor]]:
    """Receiver side: yields (name, tensor) as each bucket arrives, for a streaming reload.

    The receive of bucket k+1 is posted before bucket k is handed to the caller, so the
    transfer overlaps the engine's load of bucket k. Every bucket gets a fresh buffer: the
    engine may keep the yielded views until a layer is complete.
    """

    def post(bucket: BucketSpec) -> tuple[dist.Work, torch.Tensor]:
        flat = torch.empty(bucket.numel, dtype=to_dtype(bucket.dtype), device=device)
        return group.broadcast(flat, 0), flat

    pending = post(buckets[0]) if buckets else None
    for i, bucket in enumerate(buckets):
        work, flat = pending
        pending = post(buckets[i + 1]) if i + 1 < len(buckets) else None
        work.wait()
        yield from unflatten(flat, bucket)


class WeightReceiverExtension:
    """Mixed into vLLM's worker class (`worker_extension_cls`); called via `collective_rpc`."""

    def cdra_init_weight_group(self, backend: str, master_addr: str, master_port: int, rank: int, world_size: int) -> None:
        self._cdra_group = init_group(backend, master_addr, master_port, rank, world_size)
        self._cdra_version = 0

    def cdra_receive_weights(self, version: int, buckets: list[BucketSpec]) -> int:
        device = next(self.model_runner.get_model().parameters()).device
        # reload_weights consumes the iterator while buckets stream in: no full second copy.
        self.model_runner.reload_weights(weights_iterator=receive_buckets(self._cdra_group, buckets, device))
        _refresh_tied_lm_head(self.model_runner.get_model())
        self._cdra_version = version
        return version

    def cdra_weight_version(self) -> int:
        return getattr(self, "_cdra_version", 0)

    def cdra_param_checksum(self) -> float:
        """Sum of all parameters: a cheap way for tests to see that weights changed or not."""
        return float(sum(p.detach().double().sum() for p in self.model_runner.get_model().parameters()))


def _refresh_tied_lm_head(model: torch.nn.Module) -> None:
    """Re-run the LM head's post-load processing when it shares the embedding weight.

    vLLM's CPU backend prepacks the LM head's GEMM at load time; the in-place reload refreshes
    the embedding it is tied to but not that packed copy, so without this a tied model would
    keep sampling with the old output projection.
    """
    lm_head = getattr(model, "lm_head", None)
    method = getattr(lm_head, "quant_method", None)
    if method is not None and hasattr(method, "process_weights_after_loading"):
        method.process_weights_after_loading(lm_head)
