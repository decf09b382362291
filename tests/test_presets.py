"""Every preset in configs/ loads through its job's own config loader and validates, without
starting anything; a preset with a key its job does not know is rejected."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from jobschema import REPO, job_schema

from cdra.config import ConfigError, load_config
from cdra.data.prompts import PROMPTS

PRESETS = sorted((REPO / "configs").glob("*.yaml"))
_COMMAND = re.compile(r"^#\s+python (jobs/\w+\.py) --config (configs/\S+\.yaml)\s*$", re.MULTILINE)


def _job_of(preset: Path) -> str:
    """The job named by the preset's own header command (`# python jobs/X.py --config <this file>`)."""
    commands = _COMMAND.findall(preset.read_text())
    assert len(commands) == 1, f"{preset.name}: the header must show one 'python jobs/X.py --config ...' line"
    job, named = commands[0]
    assert named == f"configs/{preset.name}", f"{preset.name}: its header command names {named}"
    return job


def test_the_published_presets_are_there():
    assert {p.name for p in PRESETS} >= {
        "grpo_math_qwen2.5-math-1.5b.yaml", "critique_rl_gsm8k.yaml", "critique_rl_math.yaml",
    }


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_loads_and_validates(preset):
    header = preset.read_text().split("\n\n")[0]
    assert "Resources:" in header and "GPU" in header, f"{preset.name}: the header must state the resources it needs"
    config = load_config(job_schema(_job_of(preset)), ["--config", str(preset)])
    # real-model presets: a model directory and real data files, never the embedded defaults
    paths = [getattr(config, k) for k in ("model_path", "actor_path", "critic_path") if hasattr(config, k)]
    assert paths and all(paths), f"{preset.name}: every model path must be set"
    for spec in (getattr(config, k) for k in ("train_data", "eval_data") if hasattr(config, k)):  # synthesis has no eval_data
        assert spec.format not in ("synthetic", "synthetic_mcq") and spec.path
    if hasattr(config, "prompt_template"):
        assert config.prompt_template in PROMPTS


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_with_an_unknown_key_is_rejected(preset, tmp_path):
    data = yaml.safe_load(preset.read_text())
    section = "learner" if "learner" in data else "rollout"  # a job without a learner (synthesis): its engine's section
    data[section]["learning_rate"] = 1e-6  # a plausible misspelling of learner.lr
    bad = tmp_path / preset.name
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=f"{section}.learning_rate"):
        load_config(job_schema(_job_of(preset)), ["--config", str(bad)])


def test_job_schema_reads_the_jobs_import():
    from cdra.recipes.critique_rl import CritiqueRLConfig
    from cdra.recipes.grpo import GRPOConfig

    assert job_schema("jobs/grpo.py") is GRPOConfig
    assert job_schema("jobs/critique_rl.py") is CritiqueRLConfig
