"""GPU smoke run: the spine on NCCL and bf16 (2 vLLM engines, DeepSpeed ZeRO-3 learner ranks,
weight sync after every update), on a 0.5B- or 1.5B-sized random Qwen2 built on the spot.

After every sync it checks that both engines decode the same greedy tokens and that each of
those tokens is the learner's own argmax (HF, teacher-forced) up to bf16 rounding. It measures
weight-sync seconds and rollout tokens/s against raw `vllm.LLM.generate`, and prints markdown
lines for benchmarks/RESULTS.md. Run it through benchmarks/gpu_smoke.sh (which checks for GPUs).

    bash benchmarks/gpu_smoke.sh [--size 0.5b|1.5b] [--syncs 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if TYPE_CHECKING:
    import torch

    from cdra.models.tiny import TinyModelConfig

ENGINES = 2
# Qwen2-0.5B/1.5B-like shapes with the byte tokenizer's 320-token vocabulary (head_dim 64/128)
SIZES: dict[str, dict[str, int]] = {
    "0.5b": dict(hidden_size=1024, num_layers=24, num_heads=16, num_kv_heads=4, intermediate_size=5632, max_positions=2048),
    "1.5b": dict(hidden_size=1536, num_layers=28, num_heads=12, num_kv_heads=2, intermediate_size=8960, max_positions=2048),
}
# bf16 keeps 8 bits of mantissa: vLLM's and HF's kernels round differently, so two logits this
# close are a tie, and either token is a correct greedy choice
TIE_TOLERANCE = 0.25


def model_config(size: str) -> TinyModelConfig:
    from cdra.models.tiny import TinyModelConfig

    if size not in SIZES:
        raise ValueError(f"--size must be one of {sorted(SIZES)}, got {size!r}")
    return TinyModelConfig(**SIZES[size], seed=0)


def parameter_count(config: TinyModelConfig) -> int:
    """Exact parameter count of the model `config` builds (on the meta device: no memory)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    hf = Qwen2Config(vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
                     num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
                     num_key_value_heads=config.num_kv_heads, tie_word_embeddings=True)
    with torch.device("meta"):
        return sum(p.numel() for p in Qwen2ForCausalLM(hf).parameters())


def plan_learner_ranks(num_gpus: int, engines: int = ENGINES, max_ranks: int = 2) -> int:
    """Learner ranks that fit next to `engines` engines, one GPU per process.

    Every process of an NCCL group needs a GPU of its own (NCCL rejects two ranks on one
    device), and the weight-sync group holds learner rank 0 and every engine.
    """
    ranks = min(max_ranks, num_gpus - engines)
    if ranks < 1:
        raise SystemExit(f"gpu_smoke: needs at least {engines + 1} GPUs ({engines} engines + 1 learner rank), found {num_gpus}")
    return ranks


def greedy_agreement(tokens: list[int], logits: torch.Tensor, tolerance: float = TIE_TOLERANCE) -> tuple[int, bool]:
    """(positions where `tokens` are the exact argmax of `logits`, whether every token is within
    `tolerance` of the best logit). `logits[i]` scores the choice of `tokens[i]` (teacher-forced)."""
    if logits.shape[0] != len(tokens):
        raise ValueError(f"{len(tokens)} tokens but logits for {logits.shape[0]} positions")
    if not tokens:
        return 0, True
    import torch

    chosen = logits[torch.arange(len(tokens)), torch.tensor(tokens)]
    best = logits.max(dim=-1)
    exact = int((chosen == best.values).sum())
    return exact, bool((best.values - chosen <= tolerance).all())


def markdown_lines(f: dict[str, Any]) -> list[str]:
    """The figures of one run as markdown for RESULTS.md (the user appends them)."""
    syncs = ", ".join(f"{s:.2f}" for s in f["sync_seconds"])
    return [
        f"### GPU smoke ({f['date']}, {f['gpus']}, vllm {f['vllm']}, torch {f['torch']})",
        "",
        f"- model: random Qwen2 {f['size']} ({f['params'] / 1e9:.2f}B parameters, bf16 = {f['bytes'] / 2**30:.2f} GiB), "
        f"{f['engines']} engines (tensor_parallel_size 1), {f['ranks']} learner ranks, ZeRO-3, weight sync over NCCL",
        f"- weight sync, seconds per push: {syncs} (median {f['sync_median']:.2f} s, {f['bytes'] / 2**30 / f['sync_median']:.2f} GiB/s to {f['engines']} engines)",
        f"- greedy after every sync: engines identical {f['engines_equal']}/{f['checks']}, "
        f"every token the learner's argmax within {TIE_TOLERANCE} logits {f['near_argmax']}/{f['checks']}, "
        f"exact argmax {f['exact_tokens']}/{f['total_tokens']} tokens",
        f"- rollout ({f['prompts']} prompts x {f['new_tokens']} tokens, one engine): RolloutWorker {f['ours_tps']:.0f} tok/s, "
        f"raw vllm.LLM.generate {f['raw_tps']:.0f} tok/s, ratio {f['ours_tps'] / f['raw_tps']:.2f}; "
        f"RolloutPool over {f['engines']} engines {f['pool_tps']:.0f} tok/s",
    ]


# --------------------------------------------------------------------------- GPU part


def _sft_samples(encode, n: int) -> list:
    """Fixed SFT rows that a random model learns within a few steps: each sync then moves the
    weights and the greedy outputs, so the equality checks compare something new every time."""
    from cdra.algos.experience import Sample

    rows = []
    for i in range(n):
        prompt = encode(f"count {i % 10}:")
        response = encode(" " + " ".join(str((i + k) % 10) for k in range(24)))
        rows.append(Sample(prompt_ids=prompt, response_ids=response))
    return rows


def _teacher_forced_logits(model, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    import torch

    ids = torch.tensor([prompt + tokens])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    return logits[len(prompt) - 1 : len(prompt) - 1 + len(tokens)]


def _raw_vllm_tokens_per_s(model_path: str, prompts: list[list[int]], new_tokens: int, eager: bool) -> float:
    """tokens/s of a bare vllm.LLM on one GPU (a Ray task of its own), warm, same sampling."""
    import ray

    @ray.remote(num_gpus=1)
    def raw() -> float:
        from vllm import LLM, SamplingParams

        llm = LLM(model=model_path, dtype="bfloat16", enforce_eager=eager, gpu_memory_utilization=0.6, seed=0)
        params = SamplingParams(temperature=1.0, max_tokens=new_tokens, min_tokens=new_tokens, logprobs=0)
        requests = [{"prompt_token_ids": p} for p in prompts]
        llm.generate(requests, params, use_tqdm=False)  # warm-up
        started = time.perf_counter()
        outs = llm.generate(requests, params, use_tqdm=False)
        return sum(len(c.token_ids) for o in outs for c in o.outputs) / (time.perf_counter() - started)

    return ray.get(raw.remote())


def run(size: str, syncs: int, prompts_n: int, new_tokens: int, eager: bool) -> dict[str, Any]:
    import ray
    import torch
    import vllm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cdra.models.tiny import build_tiny_model
    from cdra.runtime.cluster import Placement, RoleResources, init_ray
    from cdra.runtime.groups import LearnerGroup, RolloutPool, WeightSync
    from cdra.runtime.learner import LearnerConfig
    from cdra.runtime.objectives import Objective
    from cdra.runtime.rollout import EngineConfig, SamplingConfig

    config = model_config(size)
    ranks = plan_learner_ranks(torch.cuda.device_count())
    print(f"[gpu_smoke] building random Qwen2 {size} ({parameter_count(config) / 1e9:.2f}B)", flush=True)
    model_path = str(build_tiny_model(config))
    tok = AutoTokenizer.from_pretrained(model_path)
    init_ray()
    placement = Placement({"rollout": RoleResources(ENGINES, 1.0, 1.0), "learner": RoleResources(ranks, 1.0, 1.0)})
    engine = EngineConfig(model_path=model_path, max_model_len=1024, gpu_memory_utilization=0.6, enforce_eager=eager)
    pool = RolloutPool(engine, ENGINES, [placement.options("rollout", i) for i in range(ENGINES)])
    learner = LearnerConfig(model_path=model_path, num_ranks=ranks, zero_stage=3, dtype="bfloat16", lr=1e-4,
                            micro_batch_size=8, sync_bucket_mb=64)
    learners = LearnerGroup(learner, tok.pad_token_id, [placement.options("learner", i) for i in range(ranks)])
    sync = WeightSync(learners, pool)  # the pool then expects the pushed version
    nbytes = sum(t.numel for b in sync.layout for t in b.tensors) * 2

    encode = lambda text: tok(text, add_special_tokens=False).input_ids  # noqa: E731
    samples = _sft_samples(encode, 8 * ranks)
    check_prompts = [encode(f"count {d}:") for d in range(4)]
    greedy = SamplingConfig(temperature=0.0, max_tokens=24, logprobs=False)
    figures: dict[str, Any] = dict(sync_seconds=[], engines_equal=0, near_argmax=0, exact_tokens=0, total_tokens=0, checks=0)
    hf_dir = Path(model_path).parent / f"{Path(model_path).name}-smoke-learner"
    for version in range(1, syncs + 1):
        learners.train(samples, Objective(kind="sft"))
        figures["sync_seconds"].append(sync.push(version))
        outs = ray.get([w.generate.remote(check_prompts, greedy) for w in pool.workers])
        per_engine = [[g[0].response_ids for g in out["groups"]] for out in outs]
        learners.save_pretrained(str(hf_dir), model_path)
        hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()  # CPU: leaves the GPUs alone
        near = True
        for prompt, tokens in zip(check_prompts, per_engine[0]):
            exact, ok = greedy_agreement(tokens, _teacher_forced_logits(hf, prompt, tokens))
            figures["exact_tokens"] += exact
            figures["total_tokens"] += len(tokens)
            near = near and ok
        figures["checks"] += 1
        figures["engines_equal"] += int(per_engine[0] == per_engine[1])
        figures["near_argmax"] += int(near)
        print(f"[gpu_smoke] v{version}: sync {figures['sync_seconds'][-1]:.2f}s, engines equal {per_engine[0] == per_engine[1]}, "
              f"learner argmax {near}: {tok.decode(per_engine[0][0])!r}", flush=True)
        del hf

    bench_prompts = [encode(f"count {i % 10}:") for i in range(prompts_n)]
    sampling = SamplingConfig(temperature=1.0, max_tokens=new_tokens, min_tokens=new_tokens, logprobs=True)
    ray.get(pool.workers[0].generate.remote(bench_prompts, sampling))  # warm-up
    out = ray.get(pool.workers[0].generate.remote(bench_prompts, sampling))
    figures["ours_tps"] = out["tokens"] / out["seconds"]
    pool.generate(bench_prompts, sampling)
    figures["pool_tps"] = pool.last_stats["rollout/tokens_per_s"]
    for actor in pool.workers + learners.workers:
        ray.kill(actor)
    placement.release()
    figures["raw_tps"] = _raw_vllm_tokens_per_s(model_path, bench_prompts, new_tokens, eager)

    figures.update(date=datetime.date.today().isoformat(), size=size, params=parameter_count(config), bytes=nbytes,
                   engines=ENGINES, ranks=ranks, prompts=prompts_n, new_tokens=new_tokens,
                   gpus=f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}", vllm=vllm.__version__,
                   torch=torch.__version__, sync_median=sorted(figures["sync_seconds"])[len(figures["sync_seconds"]) // 2])
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="0.5b", choices=sorted(SIZES))
    parser.add_argument("--syncs", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--eager", action="store_true", help="vLLM without CUDA graphs (the EngineConfig default)")
    parser.add_argument("--out", default="benchmarks/gpu_smoke_results.md", help="where the markdown lines go too")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("gpu_smoke: torch sees no CUDA device (is this the CPU install? use `bash cluster/install.sh gpu`)")
    figures = run(args.size, args.syncs, args.prompts, args.new_tokens, args.eager)
    lines = markdown_lines(figures)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"[gpu_smoke] wrote {args.out}; append it to benchmarks/RESULTS.md")
    ok = figures["engines_equal"] == figures["near_argmax"] == figures["checks"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
