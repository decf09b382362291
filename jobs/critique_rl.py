"""Critique-RL, the main job: a critic trained in two stages (discriminability, then helpfulness)
with a frozen actor that refines. `python jobs/critique_rl.py [--config FILE] [--check] [key=value ...]`;
--help lists keys. Two jobs instead of one: `stage=1`, then `stage=2 critic_path=OUT/final_model`."""

from cdra.config import run_job
from cdra.recipes.critique_rl import CritiqueRLConfig, prepare, run

if __name__ == "__main__":
    run_job(CritiqueRLConfig, prepare, run)
