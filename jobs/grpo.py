"""GRPO with outcome rewards. `python jobs/grpo.py [--config FILE] [--check] [key=value ...]`; --help lists keys."""

from cdra.config import run_job
from cdra.recipes.grpo import GRPOConfig, prepare, run

if __name__ == "__main__":
    run_job(GRPOConfig, prepare, run)
