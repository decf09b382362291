"""Supervised fine-tuning on (prompt, response) data. `python jobs/sft.py [--config FILE] [key=value ...]`; --help lists keys."""

import json

from cdra.config import load_config
from cdra.recipes.sft import SFTConfig, run

if __name__ == "__main__":
    print(json.dumps(run(load_config(SFTConfig)), indent=2, sort_keys=True))
