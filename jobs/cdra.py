"""CDRA: GRPO on dense step rewards from a served generative PRM. `python jobs/cdra.py [--config FILE] [--check] [key=value ...]`; --help lists keys."""

import sys
from pathlib import Path

# this script shares the package's name: drop its own directory from the path, so that
# `import cdra` finds the package and not this file
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from cdra.config import run_job  # noqa: E402
from cdra.recipes.cdra import CDRAConfig, prepare, run  # noqa: E402

if __name__ == "__main__":
    run_job(CDRAConfig, prepare, run)
