"""Weight sync from 2 ZeRO-3 learner ranks: parameters are gathered bucket by bucket (never the
whole model at once), and the engine then decodes what the learner's weights decode."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _record_gathers(worker_actor) -> None:
    """Inside a learner actor: log the parameter count of every ZeRO-3 gather."""

    def patch(actor) -> None:
        worker = actor.worker
        original = worker._gathered
        worker.gather_log = []

        def logged(params):
            worker.gather_log.append(sum(int(p.ds_numel) for p in params))
            return original(params)

        worker._gathered = logged

    import ray

    ray.get(worker_actor.__ray_call__.remote(patch))


def _strip(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids


def test_zero3_sync_gathers_per_bucket_and_matches_hf(tmp_path, ray_local):
    import ray
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cdra.algos.experience import Sample
    from cdra.models.tiny import build_tiny_model
    from cdra.runtime.groups import LearnerGroup, RolloutPool, WeightSync
    from cdra.runtime.learner import LearnerConfig
    from cdra.runtime.objectives import Objective
    from cdra.runtime.rollout import EngineConfig, SamplingConfig

    path = str(build_tiny_model())
    tok = AutoTokenizer.from_pretrained(path)
    learners = LearnerGroup(LearnerConfig(model_path=path, num_ranks=2, zero_stage=3, lr=1e-2, sync_bucket_mb=1), tok.pad_token_id)
    pool = RolloutPool(EngineConfig(model_path=path, max_model_len=128, kv_cache_gb=1), 1)
    try:
        sync = WeightSync(learners, pool)  # the pool then expects the pushed version
        bucket_sizes = [b.numel for b in sync.layout]
        total = sum(bucket_sizes)
        assert len(bucket_sizes) >= 3

        encode = lambda text: tok(text, add_special_tokens=False).input_ids  # noqa: E731
        samples = [Sample(prompt_ids=encode(f"n{i}:"), response_ids=encode(" 1 2 3 4 5 6 7 8")) for i in range(4)]
        learners.train(samples, Objective(kind="sft"))
        base = ray.get(pool.workers[0].param_checksum.remote())
        for w in learners.workers:
            _record_gathers(w)
        sync.push(1)
        logs = [ray.get(w.__ray_call__.remote(lambda a: a.worker.gather_log)) for w in learners.workers]
        # both ranks joined one gather per bucket, each of exactly that bucket's parameters
        assert logs[0] == logs[1] == bucket_sizes and max(logs[0]) < total
        assert ray.get(pool.workers[0].param_checksum.remote()) != pytest.approx(base, rel=1e-9)

        prompts = [encode("n1:"), encode("n3:")]
        out = pool.generate(prompts, SamplingConfig(temperature=0.0, max_tokens=12, logprobs=False))
        learners.save_pretrained(str(tmp_path / "hf"), path)  # named_weights: one gather per parameter
        hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
        for ids, group in zip(prompts, out):
            ref = hf.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)[0, len(ids):]
            assert _strip(group[0].response_ids, tok.eos_token_id) == _strip(ref.tolist(), tok.eos_token_id)
    finally:
        for actor in pool.workers + learners.workers:
            ray.kill(actor)
