"""`python jobs/step_ppo.py` on real engines, learner, PRM actor and reference: the PRM's step
scores sit on the step-end tokens of the policy's responses, the critic's value loss and the
returns are finite, eval records carry process accuracy; and its config fails in one line."""

from __future__ import annotations

import json
import math
import re

import pytest
from jobscript import run_job_script
from judged_rows import judged_rows

from cdra.config import ConfigError, load_config
from cdra.recipes.step_ppo import StepPPOConfig, prepare


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory) -> str:
    """A 4-class token classifier on the zoo steps policy (its score head seeded, untrained): the
    PRM's scores need not mean anything here, only land where the steps end."""
    import torch
    from transformers import AutoTokenizer

    from cdra.models.heads import load_model, save_model
    from cdra.models.zoo import checkpoint_path

    model = load_model(checkpoint_path("steps"), "classifier", num_labels=4, seed=3)
    torch.nn.init.normal_(model.score.weight, std=0.5, generator=torch.Generator().manual_seed(3))
    target = tmp_path_factory.mktemp("prm")
    save_model(model, target)
    AutoTokenizer.from_pretrained(checkpoint_path("steps")).save_pretrained(target)
    return str(target)


def _config(*overrides: str) -> StepPPOConfig:
    return load_config(StepPPOConfig, list(overrides))


def test_bad_settings_fail_in_one_line_before_any_actor(prm_dir, tmp_path):
    from cdra.models.zoo import checkpoint_path

    cases = [
        (["learner.head=lm"], "learner.head must be lm+value"),
        (["rollout_batch_size=10"], "multiple of samples_per_prompt"),
        (["reward_clip=0"], "reward_clip must be > 0"),
        (["kl_coef=-1"], "kl_coef must be >= 0"),
        (["lam=1.5"], "gamma and lam must be in [0, 1]"),
        ([f"learner.critic_path={prm_dir}"], "critic_path is set by the recipe"),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            _config(f"prm_path={prm_dir}", *overrides)
    with pytest.raises(ConfigError, match="threshold_class 4 needs more"):
        prepare(_config(f"prm_path={prm_dir}", "threshold_class=4"))
    with pytest.raises(ConfigError, match="not a token-classification model"):
        prepare(_config(f"prm_path={checkpoint_path('steps')}"))
    with pytest.raises(ConfigError, match="no config.json"):
        prepare(_config(f"prm_path={tmp_path}"))
    prepared = prepare(_config(f"prm_path={prm_dir}"))
    assert set(prepared.roles) == {"rollout", "learner", "prm", "scorer", "reference"}


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_step_ppo_job_pays_prm_scores_at_step_ends(prm_dir, tmp_path):
    from transformers import AutoTokenizer

    from cdra.models.zoo import checkpoint_path

    out = tmp_path / "step_ppo"
    proc = run_job_script("step_ppo", f"prm_path={prm_dir}", "steps=2", "rollout_batch_size=16", "eval_data.num_examples=16",
                          "run.eval_every=2", f"run.output_dir={out}", "run.use_wandb=false")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["policy/version"] == 2.0
    assert math.isfinite(summary["learner/value_loss"]) and summary["learner/value_loss"] > 0
    assert summary["prm/errors"] == 0 and summary["prm/timeouts"] == 0 and summary["prm/items"] > 0
    for key in ("eval/accuracy", "eval/process_accuracy"):
        assert 0.0 <= summary[f"{key}_before"] <= 1.0 and 0.0 <= summary[key] <= 1.0
    for step in (0, 2):  # per-question records, as `python -m cdra.recipes.compare` reads them
        records = [json.loads(line) for line in (out / "eval" / f"eval-step{step}.jsonl").read_text().splitlines()]
        assert len(records) == 16 and all(r["process_accuracy"] in (0.0, 1.0) and r["correct"] in (0.0, 1.0) for r in records)
    assert (out / "final_model" / "critic" / "config.json").is_file()

    tokenizer = AutoTokenizer.from_pretrained(checkpoint_path("steps"))
    rows = list(judged_rows(out / "experience.parquet", tokenizer))
    assert len(rows) == 32 and {r.row["policy_version"] for r in rows} == {0, 1}
    scored = 0
    for r in rows:
        expected = [0.0] * len(r.ids)
        for span, score in zip(r.spans, r.meta["step_scores"]):
            expected[span.end - 1] += score
            scored += 1
        if r.row["policy_version"] == 0:
            # sampled by the starting policy: the learner's log-probs equal the reference's, no KL
            assert abs(r.meta["kl_reward"]) < 1e-3
            assert r.rewards == pytest.approx(expected, abs=1e-4)
        else:  # one update on: a small KL penalty on every token, the step scores on top
            assert [a - e for a, e in zip(r.rewards, expected)] == pytest.approx([0.0] * len(r.ids), abs=0.05)
            assert sum(r.rewards) - sum(expected) == pytest.approx(r.meta["kl_reward"], abs=1e-4)
    assert scored > 32  # about 2 steps per response
