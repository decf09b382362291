"""The judge service on a real vLLM engine of its own (the zoo critic judging the zoo steps
policy): one prompt per step with token spans of the policy's response ids, P(Yes) from top-k
log-probs against a transformers forward pass, and time limits and failures counted."""

from __future__ import annotations

import math
import time

import pytest
import torch

from cdra.data.prompts import render_prompt
from cdra.data.synthetic import make_problems
from cdra.models.zoo import DEFAULT_SYNTHETIC, checkpoint_path
from cdra.rewards.judging import JudgeError, Judgement, incremental_offsets, steps_splitter, yes_probability_at
from cdra.runtime.rollout import EngineConfig, SamplingConfig
from cdra.runtime.scorer import ScoreItem

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

MARKER = "Correctness of the step: "  # the critic then writes "Correct" or "Wrong"


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoint_path("steps"))


@pytest.fixture(scope="module")
def critic_hf():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(checkpoint_path("critic"), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def judge(ray_local, tok):
    from cdra.runtime.judge import JudgePool, JudgeSettings

    settings = JudgeSettings(SamplingConfig(temperature=0.0, max_tokens=160, logprobs=False), n=1, top_logprobs=20, time_limit_s=120)
    pool = JudgePool.start(EngineConfig(model_path=checkpoint_path("critic"), max_model_len=512), 1, settings, policy_tokenizer=tok)
    yield pool
    pool.close()


def _policy_completions(tok, count: int) -> list[ScoreItem]:
    """Sampled answers of the steps policy (transformers; T=1, so some steps are wrong)."""
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(checkpoint_path("steps"), dtype=torch.float32).eval()
    torch.manual_seed(0)
    items = []
    for p in make_problems(count, 3, DEFAULT_SYNTHETIC, "test"):
        prompt_ids = tok(render_prompt("critique_rl_inference_short", question=p.question), add_special_tokens=False).input_ids
        out = policy.generate(torch.tensor([prompt_ids]), max_new_tokens=60, do_sample=True, temperature=1.0, pad_token_id=tok.pad_token_id)
        items.append(ScoreItem("", str(p.answer), prompt=p.question, response_ids=out[0, len(prompt_ids):].tolist(), prompt_ids=prompt_ids))
    return items


def _verdict_position(j: Judgement, tok) -> int | None:
    """The generated position right after the critic's first "Correctness of the step: "."""
    text, offsets = incremental_offsets(j.token_ids, lambda ids: tok.decode(ids, skip_special_tokens=True))
    at = text.find(MARKER)
    if at < 0:
        return None
    after = at + len(MARKER)
    return next((t for t, (s, _) in enumerate(offsets) if s >= after), None)


def _hf_yes(model, ids: list[int], yes: int, no: int) -> float:
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].double(), -1)
    return float(torch.sigmoid(logp[yes] - logp[no]))


def test_step_judge_scores_each_step_with_token_spans_of_the_policy_response(judge, tok, critic_hf):
    from cdra.runtime.judge import StepJudge

    yes, no = tok("C", add_special_tokens=False).input_ids[0], tok("W", add_special_tokens=False).input_ids[0]
    built: list[str] = []
    seen: list[Judgement] = []

    def build(item: ScoreItem, steps: list[str], k: int) -> str:
        prompt = render_prompt("critique_rl_critique_short", question=item.prompt, response="".join(steps[: k + 1]).strip())
        built.append(prompt)
        return prompt

    def parse(j: Judgement) -> float | None:
        seen.append(j)  # called once per prompt, in prompt order (n=1)
        at = _verdict_position(j, tok)
        return None if at is None else yes_probability_at(j, [yes], [no], at)

    items = _policy_completions(tok, 4)
    results = judge.score_steps(items, StepJudge(split=steps_splitter(), build_prompt=build, parse=parse, combine=min))

    assert judge.version == 0 and judge.counts["errors"] == judge.counts["timeouts"] == 0
    assert sum(len(r.step_scores) for r in results) == len(built) >= 2 * len(items)
    for item, r in zip(items, results):
        text = tok.decode(item.response_ids, skip_special_tokens=True)
        steps = [text[a:b] for a, b in steps_splitter()(text)]
        # token spans index the policy's own response ids: they decode to exactly the steps
        assert [tok.decode(item.response_ids[a:b]) for a, b in r.step_spans] == steps
        assert all(b0 <= a1 for (_, b0), (a1, _) in zip(r.step_spans, r.step_spans[1:]))
        assert r.score == min(r.step_scores)

    # every step score is P(C) / (P(C) + P(W)) at the verdict token, as transformers computes it
    scores = [s for r in results for s in r.step_scores]
    checked = 0
    for prompt, j, score in zip(built, seen, scores, strict=True):
        at = _verdict_position(j, tok)
        if at is None:
            assert score == 0.0
            continue
        ids = tok(prompt, add_special_tokens=False).input_ids + j.token_ids[:at]
        assert score == pytest.approx(_hf_yes(critic_hf, ids, yes, no), abs=1e-3)
        checked += 1
    assert checked >= len(built) // 2


def test_yes_probability_from_top_k_equals_transformers(judge, tok, critic_hf):
    prompts = [render_prompt("critique_rl_critique_short", question=item.prompt, response=tok.decode(item.response_ids, skip_special_tokens=True))
               for item in _policy_completions(tok, 3)]
    out = judge.judge(prompts)
    compared = []
    for prompt, (j,) in zip(prompts, out):
        ids = tok(prompt, add_special_tokens=False).input_ids
        with torch.no_grad():  # one pass over prompt + judgement: row len(ids) - 1 + t predicts generated token t
            logp = torch.log_softmax(critic_hf(torch.tensor([ids + j.token_ids])).logits[0, len(ids) - 1 : -1].double(), -1)
        top2 = logp.topk(2, dim=-1)
        # the judge's first token and its two least confident positions; the two likeliest
        # tokens there play Yes and No
        margin = top2.values[:, 0] - top2.values[:, 1]
        for position in [0, *margin.argsort()[:2].tolist()]:
            no, yes = top2.indices[position].tolist()
            assert {yes, no} <= set(j.top_logprobs[position])
            expected = float(torch.sigmoid(logp[position, yes] - logp[position, no]))
            assert yes_probability_at(j, [yes], [no], position) == pytest.approx(expected, abs=1e-3)
            for t, lp in j.top_logprobs[position].items():  # the top-k log-probs themselves
                assert lp == pytest.approx(float(logp[position, t]), abs=1e-3)
            compared.append(expected)
    assert len(compared) == 9 and max(compared) > 0.1  # uncertain positions: not only near-0 values


def test_timeouts_and_failures_score_zero_are_counted_and_the_engine_carries_on(judge, tok):
    from cdra.runtime.judge import JudgeSettings

    counts = dict(judge.counts)
    long = JudgeSettings(SamplingConfig(temperature=1.0, max_tokens=400, min_tokens=400, logprobs=False), n=4, time_limit_s=0.5)
    prompts = ["Q: Start with 1.\nA: Step 1: 1+1=2\nCritique:"] * 4
    started = time.monotonic()
    out = judge.judge(prompts, long)
    assert time.monotonic() - started < 30
    assert all(isinstance(r, JudgeError) and r.kind == "timeout" for r in out)
    assert judge.counts["timeouts"] == counts["timeouts"] + 4

    too_long = [0] * 600  # over max_model_len: this prompt's engine call fails, the others run
    scored = judge.score_prompts([too_long, prompts[0]], parse=lambda j: 1.0)
    assert scored[0].score == 0.0 and "max_model_len" in scored[0].error
    assert scored[1].score == 1.0 and scored[1].error is None  # the engine is free again after the aborts
    raising = judge.score_prompts([prompts[0]], parse=lambda j: math.log(-1.0))
    assert raising[0].score == 0.0 and "ValueError" in raising[0].error
    assert judge.counts["errors"] == counts["errors"] + 2
    assert judge.stats()["judge/timeouts"] == counts["timeouts"] + 4
