"""The real distributed loop: 2 vLLM rollout engines, 2 DeepSpeed learner ranks, scorer pool,
reference model, replay store and weight broadcast, running GRPO steps on CPU; its own
listeners are on loopback (loopback_listeners.py)."""

from __future__ import annotations

import math

import pytest
import ray
import torch
from loopback_listeners import assert_run_listeners_on_loopback, run_listeners

from cdra.config import load_config
from cdra.recipes import grpo
from cdra.runtime.rollout import SamplingConfig
from cdra.runtime.tracking import read_metrics

pytestmark = [pytest.mark.timeout(900), pytest.mark.integration]


def _strip(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids


def test_grpo_steps_on_real_actors(tmp_path, r1_model, ray_local):
    config = load_config(grpo.GRPOConfig, [
        f"model_path={r1_model}", "steps=2", "rollout_batch_size=32", "group_size=4", "train_batch_size=16",
        "kl_coef=0.05", "num_rollout_workers=2", "learner.num_ranks=2", "learner.zero_stage=2", "learner.lr=1e-3",
        "eval_data.num_examples=8", f"run.output_dir={tmp_path / 'run'}", "run.use_wandb=false", "run.eval_every=2",
    ])
    session = grpo.start_session(config)
    try:
        base_checksum = ray.get(session.rollouts.workers[0].param_checksum.remote())
        grpo.train(session, config)
        listeners = run_listeners(session)  # while the run's actors are up
        # the learners never build DeepSpeed's shm inference op (a fresh machine's start-up cost)
        shm_usable = session.learners.workers[0].__ray_call__.remote(
            lambda self: __import__("deepspeed").ops.__compatible_ops__["deepspeed_shm_comm"])
        assert ray.get(shm_usable) is False

        # every engine acknowledged the last update and holds new weights
        assert session.rollouts.versions() == [2, 2]
        checksums = [ray.get(w.param_checksum.remote()) for w in session.rollouts.workers]
        assert checksums[0] == pytest.approx(checksums[1], rel=1e-9)
        assert checksums[0] != pytest.approx(base_checksum, rel=1e-9)

        # after the sync, vLLM greedy decoding equals the learner's weights decoded by HF
        prompts = [session.encode(session.prompt("r1_short", e)) for e in grpo.load_examples(config.eval_data, "eval")[:4]]
        engine_out = session.rollouts.generate(prompts, SamplingConfig(temperature=0.0, max_tokens=48, logprobs=False), n=1)
        session.learners.save_pretrained(str(tmp_path / "hf"), session.model_path)
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
        for ids, group in zip(prompts, engine_out):
            ref = hf.generate(torch.tensor([ids]), max_new_tokens=48, do_sample=False, pad_token_id=session.pad_id)[0, len(ids):].tolist()
            assert _strip(group[0].response_ids, session.eos_id) == _strip(ref, session.eos_id)

        # replay records carry provenance
        history = ray.get(session.replay.to_dataset.remote("history"))
        assert len(history) == 2 * 32
        assert set(history["policy_version"]) == {0, 1}
        assert all(pid.startswith("synthetic-train") for pid in history["prompt_id"])
        assert len(set(history["group_id"])) == 2 * 8
    finally:
        session.close()

    assert_run_listeners_on_loopback(listeners)

    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert math.isfinite(r["learner/loss"]) and math.isfinite(r["learner/grad_norm"])
        assert r["learner/grad_norm"] > 0
        assert "learner/kl" in r and r["policy/version"] == r["step"]
    assert (tmp_path / "run" / "final_model" / "config.json").exists()
    assert (tmp_path / "run" / "experience.parquet").exists()
