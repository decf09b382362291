"""GRPO with outcome rewards. `python jobs/grpo.py [--config FILE] [key=value ...]`; --help lists keys."""

import json

from cdra.config import load_config
from cdra.recipes.grpo import GRPOConfig, run

if __name__ == "__main__":
    print(json.dumps(run(load_config(GRPOConfig)), indent=2, sort_keys=True))
