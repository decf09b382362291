"""Step judgements/s through the judge service (`JudgePool.score_steps`) vs raw
`vllm.LLM.generate` on the same step prompts, same engine.

Both sides use one RolloutWorker actor: the raw side calls that actor's own `llm.generate`
(through `__ray_call__`, timed inside the actor) with the SamplingParams the service sends
(n, max_tokens = min_tokens, top-k log-probs), so the engine and its settings are identical.
The service side is timed in the driver and includes all it adds: decoding the policy's
response ids into token offsets, splitting steps, building and encoding prompts, the
engine-side deadline loop, moving judgements to the driver, parsing P(Yes) and aggregating.
Rounds alternate raw/service so shared-machine load hits both alike.

    python benchmarks/judge_throughput.py [--responses 8] [--n 2] [--max-tokens 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

from _common import load_average, median, table, write_section


def _raw_generate(worker, prompts: list[list[int]], n: int, max_tokens: int, top_logprobs: int) -> float:
    """Seconds of one plain `llm.generate` call inside the judge's own engine actor."""
    import ray

    def run(self, prompts, n, max_tokens, top_logprobs):
        from vllm import SamplingParams

        params = SamplingParams(n=n, temperature=1.0, max_tokens=max_tokens, min_tokens=max_tokens, logprobs=top_logprobs)
        started = time.perf_counter()
        self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        return time.perf_counter() - started

    return ray.get(worker.__ray_call__.remote(run, prompts, n, max_tokens, top_logprobs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responses", type=int, default=8)
    parser.add_argument("--n", type=int, default=2, help="sampled judgements per step prompt")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--top-logprobs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from cdra.data.prompts import render_prompt
    from cdra.data.synthetic import format_steps_solution, make_problems
    from cdra.models.zoo import DEFAULT_SYNTHETIC, checkpoint_path
    from cdra.rewards.judging import steps_splitter, yes_probability_at
    from cdra.runtime.cluster import init_ray
    from cdra.runtime.judge import JudgePool, JudgeSettings, StepJudge
    from cdra.runtime.rollout import EngineConfig, SamplingConfig
    from cdra.runtime.scorer import ScoreItem

    init_ray()
    tok = AutoTokenizer.from_pretrained(checkpoint_path("steps"))
    problems = make_problems(args.responses, 0, DEFAULT_SYNTHETIC, "test")
    items = [ScoreItem("", "", prompt=p.question, response_ids=tok(" " + format_steps_solution(p), add_special_tokens=False).input_ids)
             for p in problems]
    yes, no = tok("C", add_special_tokens=False).input_ids[0], tok("W", add_special_tokens=False).input_ids[0]

    def build(item: ScoreItem, steps: list[str], k: int) -> str:
        return render_prompt("critique_rl_critique_short", question=item.prompt, response="".join(steps[: k + 1]).strip())

    spec = StepJudge(split=steps_splitter(), build_prompt=build, parse=lambda j: yes_probability_at(j, [yes], [no], -1))
    settings = JudgeSettings(SamplingConfig(temperature=1.0, max_tokens=args.max_tokens, min_tokens=args.max_tokens, logprobs=False),
                             n=args.n, top_logprobs=args.top_logprobs, time_limit_s=600)
    judge = JudgePool.start(EngineConfig(model_path=checkpoint_path("critic"), max_model_len=512), 1, settings, policy_tokenizer=tok)
    try:
        prompts = [judge.encode(build(it, steps, k)) for it in items for steps, _ in [judge.step_spans(it, spec)] for k in range(len(steps))]
        judgements = len(prompts) * args.n
        worker = judge.engines.workers[0]
        _raw_generate(worker, prompts[:2], 1, 4, args.top_logprobs)  # warm-up
        raw, served = [], []
        for _ in range(args.rounds):
            raw.append(judgements / _raw_generate(worker, prompts, args.n, args.max_tokens, args.top_logprobs))
            started = time.perf_counter()
            results = judge.score_steps(items, spec)
            served.append(judgements / (time.perf_counter() - started))
            assert sum(len(r.step_scores) for r in results) == len(prompts) and judge.counts["errors"] == 0
        ratio = median(served) / median(raw)
        body = table(["side", "step judgements/s (median)", "rounds"],
                     [["raw vllm.LLM.generate", median(raw), args.rounds], ["JudgePool.score_steps", median(served), args.rounds]])
        body += (f"\n\nratio service/raw: **{ratio:.3f}**. {len(prompts)} step prompts from {args.responses} responses, n={args.n}, "
                 f"{args.max_tokens} tokens each, top-{args.top_logprobs} log-probs; judge zoo `critic`, 1 CPU engine; "
                 f"load {load_average()}.\n")
        print(body)
        if not args.no_write:
            write_section("judge_throughput", "Judge service throughput", body)
    finally:
        judge.close()


if __name__ == "__main__":
    main()
