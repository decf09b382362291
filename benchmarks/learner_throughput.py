"""Learner tokens/s: `LearnerGroup` (1 rank, ZeRO 0 and 2) vs plain torch on the same model and batch.

The plain side is the ceiling: the same HF model in this (driver) process with the learner
actor's torch thread count, the same micro-batches, a masked policy-gradient loss, backward,
grad-norm clipping and one `torch.optim.AdamW` step. The LearnerGroup side is timed in the
driver around `LearnerGroup.train` (Ray transfer, collate, DeepSpeed, metrics included); the
rank's own timing is reported too. Rounds alternate so shared-machine load hits both alike.

    python benchmarks/learner_throughput.py [--models 128x2 256x4] [--samples 32] [--prompt-len 32] [--response-len 96] [--micro 8]
"""

from __future__ import annotations

import argparse
import random
import time
from typing import TYPE_CHECKING, Any

from _common import cpu_clock, load_average, median, table, write_section

if TYPE_CHECKING:
    from cdra.algos.experience import Sample

TARGET = 0.8


def synthetic_samples(count: int, prompt_len: int, response_len: int, vocab: int, seed: int = 0) -> list[Sample]:
    """Fixed-length samples (no padding) with +-1 advantages: every token is real work on both sides."""
    from cdra.algos.experience import Sample

    rng = random.Random(seed)
    return [Sample(prompt_ids=[rng.randrange(vocab) for _ in range(prompt_len)],
                   response_ids=[rng.randrange(vocab) for _ in range(response_len)],
                   reward=float(i % 2), advantage=1.0 if i % 2 else -1.0, group_id=i // 4)
            for i in range(count)]


class PlainTorch:
    """forward + backward + clip + AdamW on the collated batch, nothing else."""

    def __init__(self, model_path: str, lr: float, betas: tuple[float, float], grad_clip: float) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, betas=betas, weight_decay=0.0)
        self.grad_clip = grad_clip

    def step(self, micro_batches: list[dict[str, Any]]) -> dict[str, float]:
        import torch

        started = time.perf_counter()
        rows = sum(mb["input_ids"].shape[0] for mb in micro_batches)
        tokens = 0
        for mb in micro_batches:
            logits = self.model(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"]).logits
            logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, mb["labels"].unsqueeze(-1)).squeeze(-1)
            mask = mb["response_mask"]
            per_row = (-mb["advantages"] * logp * mask).sum(-1) / mask.sum(-1).clamp(min=1)
            (per_row.sum() / rows).backward()
            tokens += int(mb["attention_mask"].sum())
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"tokens": float(tokens), "seconds": time.perf_counter() - started}


def measure_stage(zero_stage: int, model_path: str, pad_id: int, samples: list[Sample], micro: int, rounds: int) -> dict[str, Any]:
    import ray
    import torch

    from cdra.algos.experience import collate, split_microbatches
    from cdra.runtime.groups import LearnerGroup
    from cdra.runtime.learner import LearnerConfig
    from cdra.runtime.objectives import Objective

    config = LearnerConfig(model_path=model_path, num_ranks=1, zero_stage=zero_stage, lr=1e-5, micro_batch_size=micro)
    started = time.perf_counter()
    group = LearnerGroup(config, pad_id)
    startup = time.perf_counter() - started
    rank_threads = ray.get(group.workers[0].__ray_call__.remote(lambda self: __import__("torch").get_num_threads()))
    torch.set_num_threads(rank_threads)  # the ceiling gets exactly the learner's compute
    plain = PlainTorch(model_path, config.lr, tuple(config.betas), config.grad_clip)
    objective = Objective(kind="policy_gradient", loss_type="reinforce_with_baseline", shuffle=False)
    micro_batches = split_microbatches(collate(samples, pad_id), micro)

    rank = group.workers[0]

    def learner_step() -> dict[str, float]:
        cpu = cpu_clock(rank) + cpu_clock()
        t = time.perf_counter()
        metrics = group.train(samples, objective, 1)
        seconds = time.perf_counter() - t
        return {"tokens": metrics["learner/tokens"], "seconds": seconds, "cpu": cpu_clock(rank) + cpu_clock() - cpu,
                "rank_tokens_per_s": metrics["learner/tokens_per_s"]}

    def plain_step() -> dict[str, float]:
        cpu = cpu_clock()
        out = plain.step(micro_batches)
        return {**out, "cpu": cpu_clock() - cpu}

    learner_step(), plain_step()  # warm-up: allocator, DeepSpeed buffers, optimizer state
    learner_runs, plain_runs, loads = [], [], [load_average()]
    for _ in range(rounds):
        learner_runs.append(learner_step())
        plain_runs.append(plain_step())
        loads.append(load_average())
    for w in group.workers:
        ray.kill(w)
    return {
        "zero": zero_stage, "threads": rank_threads, "startup_s": startup,
        "learner": median([r["tokens"] / r["seconds"] for r in learner_runs]),
        "learner_rank": median([r["rank_tokens_per_s"] for r in learner_runs]),
        "plain": median([r["tokens"] / r["seconds"] for r in plain_runs]),
        "learner_cpu": median([r["tokens"] / r["cpu"] for r in learner_runs]),
        "plain_cpu": median([r["tokens"] / r["cpu"] for r in plain_runs]),
        "tokens": learner_runs[0]["tokens"], "plain_tokens": plain_runs[0]["tokens"], "loads": loads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--response-len", type=int, default=96)
    parser.add_argument("--micro", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["128x2", "256x4"], help="HIDDENxLAYERS, head_dim 64")
    parser.add_argument("--zero", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from cdra.models.tiny import TinyModelConfig, build_tiny_model
    from cdra.runtime.cluster import init_ray

    init_ray()
    samples = synthetic_samples(args.samples, args.prompt_len, args.response_len, 256)
    results = []
    for spec in args.models:
        hidden, layers = (int(x) for x in spec.lower().split("x"))
        model = TinyModelConfig(hidden_size=hidden, num_layers=layers, num_heads=hidden // 64,
                                num_kv_heads=hidden // 64, intermediate_size=4 * hidden)
        model_path = str(build_tiny_model(model))
        pad_id = AutoTokenizer.from_pretrained(model_path).pad_token_id
        for stage in args.zero:
            r = measure_stage(stage, model_path, pad_id, samples, args.micro, args.rounds)
            r["model"] = f"{hidden}h x {layers}L"
            print(f"[bench] {spec} ZeRO-{stage}: LearnerGroup {r['learner']:.0f} tok/s, plain torch {r['plain']:.0f} tok/s")
            results.append(r)

    rows = [[r["model"], r["zero"], r["threads"], r["plain"], r["learner"], r["learner"] / r["plain"], r["learner_rank"],
             r["learner_rank"] / r["plain"], r["plain_cpu"], r["learner_cpu"], r["learner_cpu"] / r["plain_cpu"], f"{r['startup_s']:.1f}", " → ".join([r["loads"][0], r["loads"][-1]])] for r in results]
    body = f"""
Models: tiny Qwen2 (HIDDEN h x LAYERS L, heads of 64, intermediate 4 x hidden, vocab 320; 128h x 2L is the default
tiny model), float32. Batch: {args.samples} samples x ({args.prompt_len} prompt +
{args.response_len} response) tokens, micro-batch {args.micro}, one optimizer step per call = {results[0]['tokens']:.0f} tokens
(plain side {results[0]['plain_tokens']:.0f}); loss reinforce_with_baseline, grad_clip 1.0, AdamW lr 1e-5.
Median of {args.rounds} alternating rounds after one warm-up. Plain torch runs in the driver with the rank's thread count.
Wall-clock ratios are the headline; the CPU-time ratio (tokens per CPU-second of the rank's process plus the driver, vs
the driver alone for plain torch) is steadier when the shared machine is oversubscribed.

{table(["model", "ZeRO", "torch threads", "plain torch tok/s", "LearnerGroup tok/s (driver)", f"ratio (target >= {TARGET})",
        "rank-internal tok/s", "ratio, rank-internal", "plain tok per CPU-s", "LearnerGroup tok per CPU-s (rank + driver)",
        "CPU-time ratio", "group startup s", "load avg before → after"], rows)}
"""
    write_section("learner_throughput", "Learner throughput: LearnerGroup vs plain torch", body)
    print(body)


if __name__ == "__main__":
    main()
