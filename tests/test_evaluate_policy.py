"""A plain policy's evaluation: the generate-and-grade path's metrics against hand-computed
values (stand-in engine and verifier: pure logic), and `python jobs/evaluate.py mode=policy` on
the zoo r1 policy with real engines and verifiers, no critic."""

from __future__ import annotations

import json

import pytest
from jobscript import run_job_script

from cdra.data.example import TaskExample
from cdra.recipes.evaluation import answer_extractor, evaluate_policy
from cdra.rewards import r1_zero_reward_fn
from cdra.runtime.rollout import Completion, SamplingConfig
from cdra.runtime.scorer import ScoreResult


class _Pool:
    """Answers each prompt [i] with the texts scripted for (i, greedy or sampled)."""

    def __init__(self, greedy: list[str], sampled: list[list[str]]) -> None:
        self.greedy, self.sampled = greedy, sampled

    def generate(self, prompts, sampling, n):
        texts = [[self.greedy[p[0]]] for p in prompts] if sampling.temperature == 0 else [self.sampled[p[0]][:n] for p in prompts]
        return [[Completion(p, [1], None, t, "stop", 0) for t in group] for p, group in zip(prompts, texts)]


class _Verifier:
    def score(self, items):
        return [ScoreResult(**_r1(i.response, i.ground_truth)) for i in items]


def _r1(response: str, gold: str) -> dict:
    d = r1_zero_reward_fn(response, gold)
    return {"score": d["reward"], "details": d}


def _a(x: str) -> str:
    return f"x </think> <answer>{x}</answer>"


def test_policy_metrics_by_hand():
    examples = [TaskExample(id="a", question="qa", answer="7"), TaskExample(id="b", question="qb", answer="3")]
    greedy = [_a("7"), "no tags 3"]  # right; unformatted
    sampled = [[_a("7"), _a("8"), _a("8"), "7"],  # 1 of 4 right, majority says 8
               [_a("3"), _a("3"), _a("1"), _a("3")]]  # 3 of 4 right, majority says 3
    report = evaluate_policy(_Pool(greedy, sampled), _Verifier(), [[0], [1]], examples, SamplingConfig(temperature=0.0),
                             SamplingConfig(temperature=0.7), 4, pass_k=[1, 2, 4], maj_k=[2, 4], answer_of=answer_extractor("r1_zero"))
    m = report.metrics
    assert m["eval/accuracy"] == m["eval/reward"] == 0.5 and m["eval/format"] == 0.5
    assert m["eval/sampled_reward"] == 4 / 8 and m["eval/sampled_format"] == 7 / 8
    # pass@k = 1 - C(n-c, k) / C(n, k): a (c=1) 1/4, 1/2, 1; b (c=3) 3/4, 1, 1
    assert m["eval/pass@1"] == pytest.approx((1 / 4 + 3 / 4) / 2)
    assert m["eval/pass@2"] == pytest.approx((1 - 3 / 6 + 1.0) / 2)
    assert m["eval/pass@4"] == 1.0
    # maj@2: a votes 7, 8 (a tie: 7 first, right), b votes 3, 3 (right); maj@4: a says 8, b says 3
    assert m["eval/maj@2"] == 1.0 and m["eval/maj@4"] == 0.5
    assert [r["correct"] for r in report.records] == [True, False]
    assert [s["correct"] for s in report.records[1]["samples"]] == [True, True, False, True]


def test_answers_maj_at_k_votes_on():
    assert answer_extractor("r1_zero")(_a("\\boxed{12}")) == "12"
    assert answer_extractor("gsm8k_lenient")("so the answer is 42.") == "42"
    assert answer_extractor("mypkg.verify:fn") is None


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_evaluate_job_on_a_plain_policy(tmp_path, r1_model):
    out = tmp_path / "eval"
    proc = run_job_script("evaluate", "mode=policy", f"policy_path={r1_model}", "data.num_examples=12", "policy.samples=4",
                          "policy.pass_k=[1,4]", "policy.maj_k=[4]", "policy.max_tokens=64", "actor_engine.max_model_len=256",
                          f"output_dir={out}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    saved = json.loads((out / "eval.json").read_text())
    m = saved["metrics"]
    assert saved["mode"] == "policy" and "critic" not in saved and not any("acc_dis" in k or "delta" in k for k in m)
    assert m["eval/num_examples"] == 12.0
    records = [json.loads(line) for line in (out / "eval_samples.jsonl").read_text().splitlines()]
    assert len(records) == 12 and all(len(r["samples"]) == 4 for r in records)
    # the verifier actors graded what the engines wrote: the same grades from the reward function here
    assert [r["correct"] for r in records] == [r1_zero_reward_fn(r["greedy"], r["answer"])["reward"] == 1.0 for r in records]
    assert m["eval/accuracy"] == pytest.approx(sum(r["correct"] for r in records) / 12)
    assert m["eval/format"] == pytest.approx(sum(r["format"] for r in records) / 12)
    counts = [sum(s["correct"] for s in r["samples"]) for r in records]
    assert m["eval/pass@1"] == pytest.approx(sum(counts) / 48)
    assert m["eval/pass@4"] == pytest.approx(sum(c > 0 for c in counts) / 12)
    assert 0.0 < m["eval/accuracy"] < 1.0 and m["eval/pass@1"] <= m["eval/pass@4"]  # the zoo policy solves some, not all
    assert "eval/maj@4" in m and "accuracy" in proc.stdout and "pass@4" in proc.stdout
