"""Evaluation on engines that receive no weights: a plain policy (mode=policy: greedy accuracy,
pass@k, maj@k, format rate; no critic) or an (actor, critic) pair (mode=critique, the default:
first attempt, critique, refinement, optionally several rounds, and pass@k).
`python jobs/evaluate.py [--config FILE] [--check] [key=value ...]`; --help lists keys. Writes
eval.json, eval_samples.jsonl and eval_chart.png to output_dir."""

from cdra.config import run_job
from cdra.recipes.evaluate import EvaluateConfig, prepare, run

if __name__ == "__main__":
    run_job(EvaluateConfig, prepare, run)
