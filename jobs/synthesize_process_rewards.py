"""LPR synthesis: N solutions, K completions per kept prefix, MC step labels as a parquet dataset. `python jobs/synthesize_process_rewards.py [--config FILE] [--check] [key=value ...]`; --help lists keys."""

import importlib
import sys
from pathlib import Path

# Python puts a job script's directory first on sys.path, so `import cdra` in any job here would
# find this file instead of the package. Take the directory off the path; and when this file is
# being imported under the package's name (by a sibling job), put the real package in its place,
# which the import statement then returns.
_JOBS = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _JOBS]
if __name__ == "cdra":
    del sys.modules["cdra"]
    sys.modules["cdra"] = importlib.import_module("cdra")

if __name__ == "__main__":
    from cdra.config import run_job
    from cdra.recipes.lpr_synthesize import SynthesizeConfig, prepare, run

    run_job(SynthesizeConfig, prepare, run)
