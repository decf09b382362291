"""CDRA: GRPO on dense step rewards from a generative process reward model served in the loop
(ALGORITHMS.md §4).

Each step: `group_size` samples per prompt on the policy's engines, written "Step 1: ... Step
N: ..." -> the judge pool (the PRM on engines of its own, T 0) judges every step given the
steps before it -> each step's score lands on that step's tokens (token spans of the policy's
own response ids), ``step_weight`` times, plus ``outcome_weight`` times the answer checker's 0/1
on every token -> advantages per token position across the group (the paper), or per-step
return-to-go normalised over the group -> token-level PPO clip + k3 KL to the reference ->
weights to the engines. ``step_weight=0 outcome_weight=1`` is outcome-only GRPO on the same
loop and budget, the side-by-side baseline.

The synthetic task knows which steps are right, so evaluation reports process accuracy (every
step right, `cdra.data.synthetic.process_correct`) next to answer accuracy, and each step logs
how often a rewarded sample reached its right answer through a wrong step.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Literal

import torch

from cdra.algos import per_position_group_normalize
from cdra.algos.dense import dense_step_rewards, per_step_return_advantages, spread_over_steps
from cdra.algos.experience import Sample
from cdra.algos.judge_quality import judge_quality
from cdra.config import check
from cdra.data.example import TaskExample
from cdra.data.loaders import DatasetSpec
from cdra.data.prompts import render_step_judge
from cdra.data.synthetic import problem_from_question, process_correct, step_truths
from cdra.recipes.common import (
    Prepared,
    ReferenceConfig,
    RunConfig,
    check_dataset,
    check_engine,
    check_learner,
    check_model_path,
    check_positive,
    check_sampling,
    check_template,
    check_verifier,
    load_examples,
    resolve_model,
    synthetic_spec,
)
from cdra.recipes.session import Session
from cdra.rewards import parse_prm_score
from cdra.rewards.judging import Judgement, steps_splitter, yes_probability_at
from cdra.rewards.prm import reasoned_step_score, token_after
from cdra.runtime.judge import JudgePool, JudgeSettings, StepJudge
from cdra.runtime.learner import LearnerConfig
from cdra.runtime.objectives import Objective
from cdra.runtime.roles import FrozenEngines, Learners, PolicyEngines, RoleSpec, RuleVerifiers, plan
from cdra.runtime.rollout import Completion, EngineConfig, SamplingConfig
from cdra.runtime.scorer import ScoreItem, ScoreResult

JUDGE_ROLE = "judge"


@dataclass
class CDRAConfig:
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="outputs/cdra", eval_every=5))
    model_path: str = field(default="", metadata={"help": "HF dir of the policy; empty: the zoo steps policy (cdra.models.zoo)"})
    prm_path: str = field(default="", metadata={"help": "HF dir of the generative PRM; empty: the zoo genprm"})
    prm: Literal["pers_genprm", "genprm", "oracle"] = field(default="pers_genprm", metadata={"help": "pers_genprm: '**SCORE:** s' in [-1, 1]; genprm: P(Yes) / (P(Yes) + P(No)) of a boxed Yes/No, averaged over judge_samples; oracle: the synthetic task's ground truth (+1 / -1 per step; the judge is only measured), the ceiling a perfect PRM would give (a diagnostic, synthetic data only)"})
    train_data: DatasetSpec = field(default_factory=lambda: synthetic_spec("train", 1024))
    eval_data: DatasetSpec = field(default_factory=lambda: synthetic_spec("test", 200))
    prompt_template: str = "critique_rl_inference_short"
    judge_template: str = "genprm_step_judge_short"
    # reasoning: the zoo judge reads and recomputes steps well but botches its final same/DIFFERENT
    # mark; read off its stated values it catches 86 % of wrong steps, not 48 % (docs/results/cdra.md)
    judge_readout: Literal["score", "reasoning"] = field(default="reasoning", metadata={"help": "pers_genprm: score = its '**SCORE:** s' (the paper); reasoning = the verdict its stated values imply (input vs expected, recomputed vs written last digit; the zoo genprm's format, `reasoned_step_score`)"})
    verifier: str = field(default="gsm8k", metadata={"help": "answer checker of the outcome term and of evaluation"})
    verifier_timeout_s: float = 10.0
    num_scorers: int = 1
    num_rollout_workers: int = 1
    num_judge_workers: int = 1
    rollout: EngineConfig = field(default_factory=lambda: EngineConfig(max_model_len=512))
    judge_engine: EngineConfig = field(default_factory=lambda: EngineConfig(max_model_len=512))
    # T 0.5 and G 4 as the paper
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.5, max_tokens=64))
    judge_max_tokens: int = 128
    judge_samples: int = field(default=1, metadata={"help": "judgements per step (genprm: averaged; pers_genprm judges at T 0)"})
    judge_temperature: float = field(default=0.0, metadata={"help": "0 for pers_genprm; the genprm variant samples its N judgements"})
    judge_time_limit_s: float = 120.0
    yes_tokens: list[str] = field(default_factory=lambda: ["Yes", " Yes"])
    no_tokens: list[str] = field(default_factory=lambda: ["No", " No"])
    prm_eval_samples: int = field(default=1, metadata={"help": "policy samples per held-out problem whose steps measure the PRM against ground truth before training (0: skip)"})
    max_steps: int = field(default=5, metadata={"help": "steps judged per response: the first consecutive 'Step N:' markers"})
    steps: int = 20
    rollout_batch_size: int = field(default=64, metadata={"help": "responses per step (prompts x group_size)"})
    group_size: int = 4
    advantage: Literal["per_position", "step_return"] = field(default="per_position", metadata={"help": "per_position: (R - mean) / (std + eps) per token position across the group (paper); step_return: per-step return-to-go normalised over the group"})
    advantage_eps: float = 1e-8
    step_weight: float = field(default=1.0, metadata={"help": "weight of the judge's step scores (0: outcome-only GRPO)"})
    # 1.0: with step rewards alone the tiny policy's answer accuracy drifted down by step 40 (docs/results/cdra.md)
    outcome_weight: float = field(default=1.0, metadata={"help": "weight of the answer checker's 0/1 on every response token"})
    # lr 1e-6 at paper scale; the tiny default takes larger steps (see docs/results/cdra.md)
    learner: LearnerConfig = field(default_factory=lambda: LearnerConfig(num_ranks=1, lr=1e-5, micro_batch_size=32, zero_stage=2))
    cliprange: float = 0.2
    epochs: int = 1
    kl_coef: float = 0.05
    kl_kind: Literal["k2", "k3"] = "k3"
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)

    def validate(self) -> None:
        check_positive(self, "steps", "num_rollout_workers", "num_judge_workers", "num_scorers", "rollout_batch_size",
                       "judge_max_tokens", "judge_samples", "judge_time_limit_s", "max_steps", "epochs", "cliprange",
                       "verifier_timeout_s")
        check(self.group_size >= 2, f"group_size must be >= 2 (advantages are relative to the group), got {self.group_size}")
        check(self.rollout_batch_size % self.group_size == 0, "rollout_batch_size must be a multiple of group_size")
        check(self.step_weight >= 0 and self.outcome_weight >= 0, "step_weight and outcome_weight must be >= 0")
        check(self.step_weight > 0 or self.outcome_weight > 0, "step_weight or outcome_weight must be > 0 (nothing to learn from)")
        check(self.prm != "oracle" or self.train_data.format == "synthetic",
              f"prm=oracle reads the synthetic task's ground truth; train_data.format is {self.train_data.format!r}")
        check(self.judge_readout == "score" or self.prm != "genprm", "judge_readout=reasoning reads a pers_genprm's judgement, not genprm's P(Yes)")
        check(self.prm_eval_samples >= 0, f"prm_eval_samples must be >= 0, got {self.prm_eval_samples}")
        check(self.kl_coef >= 0, f"kl_coef must be >= 0, got {self.kl_coef}")
        check(self.advantage_eps >= 0, f"advantage_eps must be >= 0, got {self.advantage_eps}")
        check(self.judge_temperature >= 0, f"judge_temperature must be >= 0, got {self.judge_temperature}")
        check(self.judge_samples == 1 or self.judge_temperature > 0,
              "judge_samples > 1 at judge_temperature 0 repeats one judgement; sample them (judge_temperature > 0)")
        check(bool(self.yes_tokens) and bool(self.no_tokens), "yes_tokens and no_tokens must not be empty")
        for name in ("prompt_template", "judge_template"):
            check_template(getattr(self, name), name)
        check_engine(self.rollout, "rollout")
        check_engine(self.judge_engine, "judge_engine")
        check_sampling(self.sampling, "sampling")
        check_learner(self.learner, "learner")
        check_dataset(self.train_data, "train_data")
        check_dataset(self.eval_data, "eval_data")


def objective_of(config: CDRAConfig) -> Objective:
    """Token-level PPO clip on the token advantages, k3 KL to the reference in the loss."""
    return Objective(kind="policy_gradient", loss_type="grpo_clip", cliprange=config.cliprange, length_normalization="mean",
                     kl_coef=config.kl_coef, kl_kind=config.kl_kind, epochs=config.epochs)


def roles_of(config: CDRAConfig) -> list[RoleSpec]:
    """The policy's engines and learners, the PRM's own engines, the answer checker, the reference."""
    return [PolicyEngines(config.rollout, config.num_rollout_workers), Learners(config.learner),
            FrozenEngines(JUDGE_ROLE, resolve_model(config.prm_path, "genprm"), config.judge_engine, config.num_judge_workers),
            RuleVerifiers(config.verifier, config.num_scorers, config.verifier_timeout_s),
            *([config.reference.role()] if config.kl_coef > 0 else [])]


def prepare(config: CDRAConfig) -> Prepared:
    """Everything checked and loaded before any actor starts."""
    check_model_path(config.model_path, "model_path")
    check_model_path(config.prm_path, "prm_path")
    check_verifier(config.verifier, "verifier")
    data = {"train_data": load_examples(config.train_data, "train_data"),
            "eval_data": load_examples(config.eval_data, "eval_data")}
    return Prepared(data, plan(roles_of(config), gpu=True))


def run(config: CDRAConfig, prepared: Prepared | None = None) -> dict[str, float]:
    """Train; returns the final metrics (incl. eval before/after)."""
    session = Session.start(config.run, config, model_path=config.model_path, zoo_checkpoint="steps", roles=roles_of(config),
                            prepared=prepared or prepare(config))
    try:
        train(session, config, start_judge(session, config))
    finally:
        summary = session.close()
    return summary


# ----------------------------------------------------------------------------- the judge


def start_judge(session: Session, config: CDRAConfig) -> JudgePool:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(config.prm_path, "genprm"))
    sampling = SamplingConfig(temperature=config.judge_temperature, max_tokens=config.judge_max_tokens, logprobs=False,
                              seed=config.run.seed if config.judge_temperature > 0 else None)
    settings = JudgeSettings(sampling, n=config.judge_samples, top_logprobs=5 if config.prm == "genprm" else 0,
                             time_limit_s=config.judge_time_limit_s)
    return JudgePool(session.roles[JUDGE_ROLE], tokenizer, settings, policy_tokenizer=session.tokenizer)


def step_judge(config: CDRAConfig, judge_tokenizer) -> StepJudge:
    """How CDRA asks its PRM about step k: the question, the steps before it, the step."""
    def build_prompt(item: ScoreItem, steps: list[str], k: int) -> str:
        return render_step_judge(config.judge_template, item.metadata["question"], steps, k)

    if config.prm != "genprm":  # oracle: the served judge (measured by `prm_quality`) is a pers_genprm
        read = reasoned_step_score if config.judge_readout == "reasoning" else parse_prm_score
        parse = lambda j: read(j.text)  # noqa: E731
    else:
        yes = [judge_tokenizer.convert_tokens_to_ids(t) for t in config.yes_tokens]
        no = [judge_tokenizer.convert_tokens_to_ids(t) for t in config.no_tokens]

        def parse(j: Judgement) -> float | None:
            position = token_after([judge_tokenizer.decode([t]) for t in j.token_ids], "\\boxed{")
            return None if position is None else yes_probability_at(j, yes, no, position)
    return StepJudge(split=steps_splitter(config.max_steps), build_prompt=build_prompt, parse=parse)


# ----------------------------------------------------------------------------- the loop


def train(session: Session, config: CDRAConfig, judge: JudgePool) -> None:
    spec = step_judge(config, judge.tokenizer)
    objective = objective_of(config)
    stream = session.prompt_stream(session.prepared.data["train_data"])
    evaluate = lambda: evaluate_process(session, config)  # noqa: E731
    if session.step == 0:
        quality = prm_quality(session, config, judge, spec)
        if quality:
            print("[cdra] PRM on held-out steps of the policy's samples: " + ", ".join(f"{k[4:]} {v:.3f}" for k, v in quality.items()))
        session.final_metrics.update(quality)
        evaluate()
    for step in session.steps(config.steps):
        examples = stream.next(config.rollout_batch_size // config.group_size)
        sampling = dataclasses.replace(config.sampling, seed=config.run.seed * 1_000_003 + step * 10_007)
        groups = session.rollouts.generate([session.encode(session.prompt(config.prompt_template, e)) for e in examples],
                                           sampling, config.group_size)
        metrics = dict(session.rollouts.last_stats)
        samples, judged, judge_seconds = score(session, config, judge, spec, examples, groups, step)
        metrics.update(step_metrics(samples, judged))
        metrics["judge/seconds"] = judge_seconds
        metrics.update(judge.stats())
        metrics.update(session.learn(samples, objective))
        session.finish_step(metrics, evaluation=evaluate)


def score(session: Session, config: CDRAConfig, judge: JudgePool, spec: StepJudge, examples: list[TaskExample],
          groups: list[list[Completion]], step: int) -> tuple[list[Sample], list[ScoreResult], float]:
    """Judge every step, check every answer, lay both on the tokens, advantages per group."""
    flat = [(e, c, i) for e, g in zip(examples, groups) for i, c in enumerate(g)]
    items = [ScoreItem(c.text, e.answer, metadata={"question": e.question, "id": e.id}, response_ids=c.response_ids)
             for e, c, _ in flat]
    started = time.perf_counter()
    judged = oracle_steps(judge, spec, items) if config.prm == "oracle" else judge.score_steps(items, spec)
    judge_seconds = time.perf_counter() - started
    outcomes = session.scorers.score(items)
    rows = [dense_step_rewards(j.step_spans, [config.step_weight * s for s in j.step_scores], len(c.response_ids),
                               o.score, config.outcome_weight) for (_, c, _), j, o in zip(flat, judged, outcomes)]
    advantages = group_advantages(config, rows, judged, outcomes, [len(c.response_ids) for _, c, _ in flat])
    samples = [Sample(
        prompt_ids=c.prompt_ids, response_ids=c.response_ids or [session.eos_id],
        rollout_logprobs=c.logprobs if c.response_ids else [0.0],
        reward=sum(j.step_scores) * config.step_weight + o.score * config.outcome_weight,
        token_rewards=row or [0.0], token_advantages=adv or [0.0],
        prompt_id=e.id, group_id=step * 100_000 + n // config.group_size, policy_version=c.policy_version,
        scorer_version=judge.version,
        metadata={"correct": o.score, "step_scores": list(j.step_scores), "process_correct": _process_correct(e, c.text),
                  "response_text": c.text, "sample_index": index, "judge_error": j.error or ""},
    ) for n, ((e, c, index), j, o, row, adv) in enumerate(zip(flat, judged, outcomes, rows, advantages))]
    return samples, judged, judge_seconds


def oracle_steps(judge: JudgePool, spec: StepJudge, items: list[ScoreItem]) -> list[ScoreResult]:
    """Ground-truth step scores in place of the judge's (`prm=oracle`): +1 for a step that is
    right given the steps before it (`step_truths`), else -1; a step that does not hold exactly
    one computation counts as wrong."""
    out = []
    for item in items:
        steps, spans = judge.step_spans(item, spec)
        problem = problem_from_question(item.metadata["question"])
        if problem is None:
            raise ValueError("prm=oracle needs synthetic problems (their ground truth)")
        truth = step_truths(problem, steps) or [False] * len(steps)
        scores = [1.0 if t else -1.0 for t in truth]
        out.append(ScoreResult(sum(scores), {"steps": float(len(steps))}, scores, spans))
    return out


def group_advantages(config: CDRAConfig, rows: list[list[float]], judged: list[ScoreResult], outcomes: list[ScoreResult],
                     lengths: list[int]) -> list[list[float]]:
    """Per-token advantages of every sample, group by group (`config.advantage`)."""
    out: list[list[float]] = []
    g = config.group_size
    for start in range(0, len(rows), g):
        if config.advantage == "per_position":
            width = max(1, max(lengths[start:start + g]))
            padded = torch.zeros(g, width, dtype=torch.float64)
            mask = torch.zeros(g, width, dtype=torch.bool)
            for i, row in enumerate(rows[start:start + g]):
                padded[i, :len(row)] = torch.tensor(row, dtype=torch.float64)
                mask[i, :len(row)] = True
            adv = per_position_group_normalize(padded, mask, g, config.advantage_eps)
            out += [adv[i, :lengths[start + i]].tolist() for i in range(g)]
        else:
            per_step = per_step_return_advantages(
                [_step_rewards(config, j, o) for j, o in zip(judged[start:start + g], outcomes[start:start + g])], config.advantage_eps)
            for j, adv, n in zip(judged[start:start + g], per_step, lengths[start:start + g]):
                spans = j.step_spans or [(0, n)]
                out.append(spread_over_steps(spans, adv, n))
    return out


def _step_rewards(config: CDRAConfig, judged: ScoreResult, outcome: ScoreResult) -> list[float]:
    """Each step's weighted score, the outcome term joining the last step's."""
    rewards = [config.step_weight * s for s in judged.step_scores] or [0.0]
    rewards[-1] += config.outcome_weight * outcome.score
    return rewards


def _process_correct(example: TaskExample, response: str) -> float | None:
    problem = problem_from_question(example.question)
    return None if problem is None else float(process_correct(problem, response))


def step_metrics(samples: list[Sample], judged: list[ScoreResult]) -> dict[str, float]:
    scores = [s for j in judged for s in j.step_scores]
    rewarded = [s for s in samples if s.metadata["correct"] > 0.5]
    known = [s for s in rewarded if s.metadata["process_correct"] is not None]
    out = {
        "reward/mean": sum(s.reward for s in samples) / len(samples),
        "reward/answer_correct": sum(s.metadata["correct"] for s in samples) / len(samples),
        "judge/step_score_mean": sum(scores) / max(1, len(scores)),
        "judge/steps_judged_wrong": sum(s < 0 for s in scores) / max(1, len(scores)),
        "judge/steps_per_response": len(scores) / len(judged),
        "judge/failed_responses": float(sum(bool(j.error) for j in judged)),
    }
    if known:  # the thesis: a right answer reached through a wrong step
        out["reward/right_answer_wrong_steps"] = sum(s.metadata["process_correct"] < 0.5 for s in known) / len(known)
    return out


# ----------------------------------------------------------------------------- evaluation


def evaluate_process(session: Session, config: CDRAConfig) -> dict[str, float]:
    """Greedy answer accuracy (the session's evaluation) and process accuracy: the share of
    held-out problems whose greedy solution has every step right (synthetic problems only)."""
    examples = session.prepared.data["eval_data"]
    return session.evaluate(examples, config.prompt_template, config.sampling, record_fields=process_fields)


def process_fields(record: dict) -> dict[str, float]:
    """A synthetic problem's greedy solution: every step right, and that with the right answer."""
    problem = problem_from_question(record["question"])
    if problem is None:
        return {}
    process = process_correct(problem, record["greedy"])
    return {"process_accuracy": float(process), "answer_and_process_accuracy": float(process and record["correct"])}


def prm_quality(session: Session, config: CDRAConfig, judge: JudgePool, spec: StepJudge) -> dict[str, float]:
    """The judge against ground truth on held-out steps: ``prm_eval_samples`` samples of the
    policy (at the training temperature) per held-out synthetic problem, every step judged and
    compared with `step_truths`. A score > 0 (pers_genprm) or > 0.5 (genprm) means "right"."""
    examples = [e for e in session.prepared.data["eval_data"] if problem_from_question(e.question) is not None]
    if not examples or config.prm_eval_samples == 0:
        return {}
    sampling = dataclasses.replace(config.sampling, seed=config.run.seed * 1_000_003 + 999_983)
    groups = session.rollouts.generate([session.encode(session.prompt(config.prompt_template, e)) for e in examples],
                                       sampling, config.prm_eval_samples)
    flat = [(e, c) for e, g in zip(examples, groups) for c in g]
    items = [ScoreItem(c.text, e.answer, metadata={"question": e.question, "id": e.id}, response_ids=c.response_ids)
             for e, c in flat]
    scores: list[float] = []
    labels: list[bool] = []
    unlabelled = 0
    for (e, _), item, judged in zip(flat, items, judge.score_steps(items, spec)):
        truth = step_truths(problem_from_question(e.question), judge.step_spans(item, spec)[0])  # the texts judged
        if truth is None or judged.error or len(truth) != len(judged.step_scores):
            unlabelled += 1
            continue
        scores += judged.step_scores
        labels += truth
    threshold = 0.5 if config.prm == "genprm" else 0.0
    out = {f"prm/{k}": v for k, v in judge_quality(scores, labels, threshold).items()}
    out["prm/unlabelled_responses"] = float(unlabelled)
    return out
