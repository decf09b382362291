"""SR-R1: GRPO on Elo rewards from the policy judging its own samples. `python jobs/sr_r1.py [--config FILE] [--check] [key=value ...]`; --help lists keys."""

from cdra.config import run_job
from cdra.recipes.sr_r1 import SRR1Config, prepare, run

if __name__ == "__main__":
    run_job(SRR1Config, prepare, run)
