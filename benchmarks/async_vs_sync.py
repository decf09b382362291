"""GRPO mean step time, async (max_staleness 1) vs sync, on the tiny default model.

Runs `cdra.recipes.grpo.run` twice in one process (one local Ray instance) with the same
settings except `mode`. Step time = difference of consecutive `time/elapsed_s` in the run's
metrics.jsonl; the first step (start-up, nothing in flight yet) and the last (final eval,
nothing left to prefetch) are left out. In async mode the next batch is generated while the
learner trains, so the ideal is step time ~ max(rollout, learn + sync) instead of their sum.

    python benchmarks/async_vs_sync.py [--steps 8] [--rollout-batch 32] [--group 4] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from _common import load_average, table, write_section


def run_mode(mode: str, args: argparse.Namespace, model_path: str, root: Path) -> dict[str, Any]:
    from cdra.data.loaders import DatasetSpec
    from cdra.recipes.common import RunConfig
    from cdra.recipes.grpo import GRPOConfig, _default_sampling, run
    from cdra.runtime.learner import LearnerConfig
    from cdra.runtime.tracking import read_metrics

    out = root / mode
    config = GRPOConfig(
        run=RunConfig(output_dir=str(out), use_wandb=False, eval_every=10**6),
        model_path=model_path,
        train_data=DatasetSpec(format="synthetic", split="train", num_examples=512),
        eval_data=DatasetSpec(format="synthetic", split="test", num_examples=8),
        num_scorers=1, num_rollout_workers=args.engines,
        sampling=dataclasses.replace(_default_sampling(), max_tokens=args.max_tokens),
        learner=LearnerConfig(num_ranks=args.ranks, lr=1e-4, micro_batch_size=16, zero_stage=args.zero),
        steps=args.steps, rollout_batch_size=args.rollout_batch, group_size=args.group, train_batch_size=args.rollout_batch,
        mode=mode, max_staleness=1,
    )
    config.validate()
    load_before = load_average()
    run(config)
    rows = read_metrics(out / "metrics.jsonl")
    elapsed = [r["time/elapsed_s"] for r in rows]
    steady = [b - a for a, b in zip(elapsed[:-2], elapsed[1:-1])]  # steps 2 .. N-1
    mean = lambda key: sum(r.get(key, 0.0) for r in rows[1:-1]) / max(1, len(rows) - 2)  # noqa: E731
    return {"mode": mode, "step_s": sum(steady) / len(steady), "steps_timed": len(steady),
            "rollout_s": mean("rollout/seconds"), "learn_tok_s": mean("learner/tokens_per_s"), "sync_s": mean("sync/seconds"),
            "staleness": mean("async/staleness"), "resp_tokens": mean("rollout/response_tokens_mean"),
            "loads": [load_before, load_average()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rollout-batch", type=int, default=32)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--engines", type=int, default=1)
    parser.add_argument("--ranks", type=int, default=1)
    parser.add_argument("--zero", type=int, default=0)
    args = parser.parse_args()
    if args.steps < 4:
        parser.error("--steps must be >= 4 (first and last steps are not timed)")

    from cdra.models.tiny import TinyModelConfig, build_tiny_model
    from cdra.runtime.cluster import init_ray

    init_ray()
    model = TinyModelConfig()
    model_path = str(build_tiny_model(model))
    with tempfile.TemporaryDirectory(prefix="cdra-bench-") as root:
        results = [run_mode(mode, args, model_path, Path(root)) for mode in ("sync", "async")]
    sync, asyn = results
    rows = [[r["mode"], r["step_s"], r["rollout_s"], r["learn_tok_s"], r["sync_s"], r["staleness"], r["resp_tokens"],
             " → ".join(r["loads"])] for r in results]
    body = f"""
Model: tiny Qwen2 default ({model.hidden_size} hidden, {model.num_layers} layers), untrained (explicit model_path from
`build_tiny_model()`). GRPO reinforce_with_baseline, {args.steps} steps, rollout_batch_size {args.rollout_batch}
(group {args.group}), one optimizer step per batch, max_tokens {args.max_tokens}, {args.engines} rollout engine(s),
{args.ranks} learner rank(s) ZeRO-{args.zero}, 1 scorer, async max_staleness 1. Mean over steps 2..{args.steps - 1}
({sync['steps_timed']} steps per mode). Per-step components are means of the logged metrics over the same steps
(in async mode rollout seconds run from submit to collect, so they overlap the previous step's learning).

{table(["mode", "mean step s", "rollout s", "learner tok/s", "sync s", "staleness", "response tokens", "load avg before → after"], rows)}

Ratio async/sync step time: **{asyn['step_s'] / sync['step_s']:.2f}** (< 1 means async is faster).
"""
    write_section("async_vs_sync", "GRPO step time: async vs sync", body)
    print(body)


if __name__ == "__main__":
    main()
