"""A self-judge on the policy's own engine: after a weight sync from the learner its scorer
version has advanced and its judgements are the learner's weights decoded greedily by HF."""

from __future__ import annotations

import pytest
import torch

from cdra.models.tiny import TinyModelConfig, build_tiny_model

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_self_judge_uses_the_synced_weights(ray_local):
    import ray
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cdra.runtime.groups import LearnerGroup, RolloutPool, WeightSync
    from cdra.runtime.judge import JudgePool, JudgeSettings
    from cdra.runtime.learner import LearnerConfig
    from cdra.runtime.rollout import EngineConfig, SamplingConfig

    learner_path = str(build_tiny_model(TinyModelConfig(seed=0)))
    engine_path = str(build_tiny_model(TinyModelConfig(seed=1)))  # other weights: only a sync makes them agree
    tok = AutoTokenizer.from_pretrained(learner_path)
    learners = LearnerGroup(LearnerConfig(model_path=learner_path, sync_bucket_mb=1), tok.pad_token_id)
    policy = RolloutPool(EngineConfig(model_path=engine_path, max_model_len=128, kv_cache_gb=1), 1)
    try:
        sync = WeightSync(learners, policy)
        judge = JudgePool(policy, tok, JudgeSettings(SamplingConfig(temperature=0.0, max_tokens=16, logprobs=False), top_logprobs=2))
        prompts = ["Is 12+7=19? Answer:", "Step 1: 3+4=7. Correct?"]
        hf = AutoModelForCausalLM.from_pretrained(learner_path, dtype=torch.float32).eval()
        expected = []
        for p in prompts:
            ids = tok(p, add_special_tokens=False).input_ids
            expected.append(hf.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id)[0, len(ids):].tolist())

        before = judge.judge(prompts)
        assert judge.version == 0 and [j[0].token_ids for j in before] != expected

        sync.push(1)
        assert judge.version == 1 and policy.versions() == [1]
        after = judge.judge(prompts)
        assert [j[0].token_ids for j in after] == expected
        assert judge.stats()["judge/version"] == 1.0 and judge.counts["errors"] == judge.counts["timeouts"] == 0
        judge.close()  # a self-judge leaves the policy's engines running
        assert policy.versions() == [1]
    finally:
        for actor in policy.workers + learners.workers:
            ray.kill(actor)
