"""GRPO from the warm-started tiny policy raises held-out reward on a short fixed-seed run."""

from __future__ import annotations

import json

import pytest

from cdra.config import load_config
from cdra.recipes import grpo

pytestmark = pytest.mark.timeout(1200)


def test_grpo_raises_heldout_reward(tmp_path, r1_model, ray_local):
    out = tmp_path / "grpo"
    config = load_config(grpo.GRPOConfig, [
        f"model_path={r1_model}", "steps=8", "num_rollout_workers=1", "learner.num_ranks=1",
        "eval_data.num_examples=128", f"run.output_dir={out}", "run.use_wandb=false", "run.eval_every=8",
    ])
    summary = grpo.run(config)
    before, after = summary["eval/reward_before"], summary["eval/reward"]
    assert 0.0 < before < 0.9, "the warm start should leave room to learn"
    assert after >= before + 0.05, f"held-out reward {before:.3f} -> {after:.3f}"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["reward/mean"] > rows[0]["reward/mean"]
