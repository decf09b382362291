"""Expert iteration on verified-correct samples. `python jobs/expert_iteration.py [--config FILE] [--check] [key=value ...]`; --help lists keys."""

from cdra.config import run_job
from cdra.recipes.expert_iteration import ExpertIterationConfig, prepare, run

if __name__ == "__main__":
    run_job(ExpertIterationConfig, prepare, run)
