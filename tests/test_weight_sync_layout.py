"""Bucket planning and unflattening for the weight broadcast (pure logic)."""

from __future__ import annotations

import torch

from cdra.runtime.weight_sync import plan_buckets, unflatten


def test_buckets_respect_size_and_dtype_and_keep_order():
    specs = [("a", (4, 4), torch.float32), ("b", (8,), torch.float32), ("c", (2,), torch.bfloat16), ("d", (100,), torch.float32)]
    buckets = plan_buckets(specs, bucket_bytes=96)
    # a (64 B) + b (32 B) fit in 96 B; c changes dtype; d (400 B) is alone though larger than a bucket
    assert [[t.name for t in b.tensors] for b in buckets] == [["a", "b"], ["c"], ["d"]]
    assert [b.dtype for b in buckets] == ["torch.float32", "torch.bfloat16", "torch.float32"]
    assert buckets[0].numel == 24


def test_unflatten_restores_tensors():
    tensors = {"x": torch.arange(6.0).view(2, 3), "y": torch.tensor([7.0, 8.0])}
    bucket = plan_buckets([(n, t.shape, t.dtype) for n, t in tensors.items()], 1 << 20)[0]
    flat = torch.cat([t.reshape(-1) for t in tensors.values()])
    out = dict(unflatten(flat, bucket))
    assert torch.equal(out["x"], tensors["x"]) and torch.equal(out["y"], tensors["y"])
