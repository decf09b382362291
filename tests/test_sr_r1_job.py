"""SR-R1 on real engines, tiny settings: the policy judges its own pairs on its own engines, the
judge holds the weights of every update (its greedy verdicts equal the learner's HF greedy
output after the last sync), and each sample's reward is its Elo term plus the weighted answer,
format and tag-count terms, normalised per group."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from cdra.config import load_config
from cdra.data.prompts import render_pair_judge
from cdra.recipes import sr_r1
from cdra.recipes.session import Session
from cdra.rewards.elo import sr_r1_advantages, sr_r1_format_reward, tag_count_reward
from cdra.runtime.tracking import read_metrics

pytestmark = [pytest.mark.timeout(900), pytest.mark.integration]

STEPS, PROMPTS, G = 2, 2, 5


def until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[:ids.index(eos)] if eos in ids else ids


def test_sr_r1_self_judge_follows_the_policy_and_rewards_add_up(tmp_path, ray_local):
    from transformers import AutoModelForCausalLM

    config = load_config(sr_r1.SRR1Config, [
        f"steps={STEPS}", f"rollout_batch_size={PROMPTS * G}", "eval_data.num_examples=16", "eval_pairs=8",
        f"run.eval_every={STEPS}", f"run.output_dir={tmp_path}", "run.use_wandb=false",
        "learner.lr=1e-4",  # large enough that two updates change greedy outputs: the sync must be real
    ])
    session = Session.start(config.run, config, model_path="", zoo_checkpoint=sr_r1.ZOO_CHECKPOINT, roles=sr_r1.roles_of(config),
                            prepared=sr_r1.prepare(config))
    try:
        judge = sr_r1.start_judge(session, config)
        assert judge.engines is session.rollouts  # the policy judges on its own engines
        sr_r1.train(session, config, judge)
        assert judge.version == session.version == STEPS
        pairs = sr_r1.heldout_pairs(session.prepared.data["eval_data"], 4, config.run.seed)
        prompts = [render_pair_judge(config.judge_template, q, a, b) for q, a, b, _ in pairs]
        greedy = sr_r1.dataclasses.replace(judge.settings, sampling=sr_r1.dataclasses.replace(judge.settings.sampling, temperature=0.0,
                                                                                            seed=None, max_tokens=48))
        judged = [until_eos(j[0].token_ids, session.eos_id) for j in judge.judge(prompts, greedy)]
    finally:
        summary = session.close()

    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "final_model", dtype=torch.float32).eval()
    expected = []
    for p in prompts:
        ids = session.encode(p)
        out = hf.generate(torch.tensor([ids]), max_new_tokens=48, do_sample=False, pad_token_id=session.pad_id)[0, len(ids):].tolist()
        expected.append(until_eos(out, session.eos_id))
    assert judged == expected

    rows = list(read_metrics(tmp_path / "metrics.jsonl"))
    assert [r["judge/version"] for r in rows] == [0.0, 1.0]  # step 2's pairs were judged by the once-updated policy
    for r in rows:
        assert r["judge/pairs"] == PROMPTS * G * (G - 1) / 2
        assert r["judge/errors"] == 0 and r["judge/timeouts"] == 0
        assert r["judge/parse_failure_rate"] < 0.5  # the zoo policy writes "Winner: response A|B"
        assert 0.0 <= r["judge/position_bias_a"] <= 1.0 and r["judge/seconds"] > 0
    for key in ("eval/accuracy", "eval/judge_agreement", "eval/judge_parsed"):
        assert 0.0 <= summary[f"{key}_before"] <= 1.0 and 0.0 <= summary[key] <= 1.0
    assert summary["eval/judge_parsed_before"] > 0.5

    samples = pd.read_parquet(tmp_path / "experience.parquet")
    assert len(samples) == STEPS * PROMPTS * G
    for _, group in samples.groupby("group_id"):
        meta = [json.loads(m) for m in group["metadata_json"]]
        elo = [m["elo_reward"] for m in meta]
        assert elo == [1.5] * G or (min(elo) == pytest.approx(0.0) and max(elo) == pytest.approx(3.0))
        rewards = [m["elo_reward"] + m["correct"] + sr_r1_format_reward(m["response_text"]) + tag_count_reward(m["response_text"])
                   for m in meta]
        assert list(group["reward"]) == pytest.approx(rewards)
        assert list(group["advantage"]) == pytest.approx(sr_r1_advantages(rewards), abs=1e-5)
