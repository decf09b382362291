"""GRPO learns from the reward alone: the embedded default, a short fixed-seed run.

The r1 warm start writes half of its answers outside the ``<answer>`` tags the r1 reward asks
for (see `cdra.models.warmstart`); GRPO must raise the tagged share and, with it, the held-out
mean reward of samples at the rollout temperature. Margins are about half of what the full
default run reaches (README: "Measured").
"""

from __future__ import annotations

import pytest

from cdra.config import load_config
from cdra.recipes import grpo
from cdra.runtime.tracking import read_metrics

pytestmark = pytest.mark.timeout(900)


def test_grpo_default_raises_held_out_reward(tmp_path, r1_model, ray_local):
    config = load_config(grpo.GRPOConfig, [
        f"model_path={r1_model}", "steps=20", "run.eval_every=20",
        f"run.output_dir={tmp_path}", "run.use_wandb=false",
    ])
    summary = grpo.run(config)
    assert summary["eval/sampled_format"] > summary["eval/sampled_format_before"] + 0.1
    assert summary["eval/sampled_reward"] > summary["eval/sampled_reward_before"] + 0.04
    train_rewards = [row["reward/mean"] for row in read_metrics(tmp_path / "metrics.jsonl")]
    assert sum(train_rewards[-5:]) > sum(train_rewards[:5])
