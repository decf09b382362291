"""Supervised fine-tuning on (prompt, response) data. `python jobs/sft.py [--config FILE] [--check] [key=value ...]`; --help lists keys."""

from cdra.config import run_job
from cdra.recipes.sft import SFTConfig, prepare, run

if __name__ == "__main__":
    run_job(SFTConfig, prepare, lambda config, prepared: run(config))
