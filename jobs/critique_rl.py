"""Critique-RL, the main job: a critic trained in two stages (discriminability, then helpfulness)
with a frozen actor that refines. `python jobs/critique_rl.py [--config FILE] [key=value ...]`;
--help lists keys. Two jobs instead of one: `stage=1`, then `stage=2 critic_path=OUT/final_model`."""

import json

from cdra.config import load_config
from cdra.recipes.critique_rl import CritiqueRLConfig, run

if __name__ == "__main__":
    print(json.dumps(run(load_config(CritiqueRLConfig)), indent=2, sort_keys=True))
