"""Expert iteration on verified-correct samples. `python jobs/expert_iteration.py [--config FILE] [key=value ...]`; --help lists keys."""

import json

from cdra.config import load_config
from cdra.recipes.expert_iteration import ExpertIterationConfig, run

if __name__ == "__main__":
    print(json.dumps(run(load_config(ExpertIterationConfig)), indent=2, sort_keys=True))
