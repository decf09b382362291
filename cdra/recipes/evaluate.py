"""The evaluation job (`python jobs/evaluate.py`): a plain policy on its own (mode=policy:
greedy accuracy, pass@k, maj@k, format rate; no critic) or an (actor, critic) pair by critique
and refinement (mode=critique, `cdra.recipes.critique_support`). Its engines receive no weights
and sit with the verifier actors in one placement group (`cdra.runtime.roles`). Writes
eval.json, eval_samples.jsonl and eval_chart.png to output_dir.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cdra.config import check, save_config
from cdra.data.example import TaskExample
from cdra.data.loaders import DatasetSpec
from cdra.data.prompts import get_prompt, render_prompt
from cdra.recipes.common import (
    Prepared,
    check_dataset,
    check_engine,
    check_model_path,
    check_positive,
    check_template,
    check_verifier,
    load_examples,
    resolve_actor,
    resolve_model,
    synthetic_spec,
)
from cdra.recipes.critique_support import (
    CritiqueEvalConfig,
    EvalReport,
    PromptConfig,
    PromptFormatter,
    Speaker,
    evaluate_critique,
    final_correct_by_question,
    format_paired,
    format_table,
    oracle,
    paired_comparison,
    plot_metrics,
    read_eval_samples,
)
from cdra.recipes.evaluation import answer_extractor, evaluate_policy, resolve_verifier_name
from cdra.runtime.cluster import init_ray
from cdra.runtime.roles import FrozenEngines, Roles, RoleSpec, RuleVerifiers, start_roles
from cdra.runtime.roles import plan as plan_roles
from cdra.runtime.rollout import EngineConfig, SamplingConfig


@dataclass
class PolicyEvalConfig:
    prompt_template: str = "r1_short"
    max_tokens: int = 96
    stop: list[str] = field(default_factory=list, metadata={"help": "empty: the template's stop strings"})
    samples: int = field(default=8, metadata={"help": "samples per question at `temperature` for pass@k / maj@k (0: greedy only)"})
    temperature: float = 0.7
    pass_k: list[int] = field(default_factory=lambda: [1, 4, 8])
    maj_k: list[int] = field(default_factory=lambda: [8])

    def validate(self) -> None:
        check_template(self.prompt_template, "policy.prompt_template")
        check(self.max_tokens >= 1, f"policy.max_tokens must be >= 1, got {self.max_tokens}")
        check(self.samples >= 0, f"policy.samples must be >= 0, got {self.samples}")
        check(self.samples == 0 or 0.0 < self.temperature <= 2.0, "policy.temperature must be in (0, 2]")
        for key in ("pass_k", "maj_k"):
            check(self.samples == 0 or all(1 <= k <= self.samples for k in getattr(self, key)), f"every policy.{key} must be in [1, samples]")


@dataclass
class EvaluateConfig:
    output_dir: str = "outputs/evaluate"
    seed: int = 0
    ray_address: str | None = None
    mode: Literal["critique", "policy"] = field(default="critique", metadata={"help": "critique: an (actor, critic) pair by critique and refinement; policy: a plain policy (policy_path): greedy accuracy, pass@k, maj@k, format rate, no critic"})
    policy_path: str = field(default="", metadata={"help": "mode=policy: HF model dir of the policy; empty: the zoo r1 policy (cdra.models.zoo)"})
    policy: PolicyEvalConfig = field(default_factory=PolicyEvalConfig)
    actor_path: str = field(default="", metadata={"help": "HF model dir of the actor; empty: the zoo refiner (cdra.models.zoo)"})
    critic_path: str = field(default="", metadata={"help": "HF model dir of the critic (e.g. a critique_rl final_model); empty: the zoo critic (cdra.models.zoo)"})
    data: DatasetSpec = field(default_factory=lambda: synthetic_spec("test", 128))
    verifier: str = field(default="auto", metadata={"help": "auto: r1_zero for an r1 policy template, else from the dataset format (gsm8k, math, aqua, mcq)"})
    num_scorers: int = 1
    verifier_timeout_s: float = 10.0
    prompts: PromptConfig = field(default_factory=PromptConfig)
    eval: CritiqueEvalConfig = field(default_factory=lambda: CritiqueEvalConfig(pass_samples=8, pass_k=[1, 4, 8]))
    actor_engine: EngineConfig = field(default_factory=lambda: EngineConfig(max_model_len=1024), metadata={"help": "engines of the actor (mode=policy: of the policy)"})
    critic_engine: EngineConfig = field(default_factory=lambda: EngineConfig(max_model_len=1024))
    num_actor_workers: int = field(default=1, metadata={"help": "engines of the actor (mode=policy: of the policy)"})
    num_critic_workers: int = 1
    baseline: str = field(default="", metadata={"help": "an earlier evaluation (its output_dir or eval_samples.jsonl), e.g. of the Stage I snapshot: adds gained / lost questions and a sign test over the questions both share"})

    def validate(self) -> None:
        check(bool(self.output_dir), "output_dir must not be empty")
        check_positive(self, "num_actor_workers", "num_critic_workers", "num_scorers", "verifier_timeout_s")
        check_engine(self.actor_engine, "actor_engine")
        check_engine(self.critic_engine, "critic_engine")
        check_dataset(self.data, "data")
        check(self.mode == "critique" or not self.baseline, "baseline compares critique evaluations: it needs mode=critique")


def verifier_of(config: EvaluateConfig) -> str:
    return resolve_verifier_name(config.verifier, config.data, config.policy.prompt_template if config.mode == "policy" else "")


def roles_of(config: EvaluateConfig, paths: dict[str, str]) -> list[RoleSpec]:
    """The engines of the policy (mode=policy) or of the actor and the critic, and the verifiers."""
    if config.mode == "policy":
        engines = [FrozenEngines("policy", paths["policy"], config.actor_engine, config.num_actor_workers)]
    else:
        engines = [FrozenEngines("actor", paths["actor"], config.actor_engine, config.num_actor_workers),
                   FrozenEngines("critic", paths["critic"], config.critic_engine, config.num_critic_workers)]
    return [*engines, RuleVerifiers(verifier_of(config), config.num_scorers, config.verifier_timeout_s)]


@dataclass
class EvaluatePlan:
    """What `run` checked and loaded before starting Ray."""

    prepared: Prepared
    baseline: dict[str, bool] | None

    def describe(self) -> str:
        return self.prepared.describe() + (f"\nbaseline: {len(self.baseline)} questions" if self.baseline is not None else "")


def prepare(config: EvaluateConfig) -> EvaluatePlan:
    """Model paths, verifier, data and baseline checked before any actor starts."""
    for key in ("policy_path",) if config.mode == "policy" else ("actor_path", "critic_path"):
        check_model_path(getattr(config, key), key)
    check_verifier(verifier_of(config), "verifier")
    baseline = final_correct_by_question(read_eval_samples(config.baseline)) if config.baseline else None
    examples = load_examples(config.data, "data")
    if baseline is not None and not baseline.keys() & {e.question for e in examples}:
        raise ValueError(f"baseline {config.baseline!r} shares no question with data: is it an evaluation of the same dataset?")
    planned = {"policy": "", "actor": "", "critic": ""}  # the plan's shape needs no resolved paths
    return EvaluatePlan(Prepared({"data": examples}, plan_roles(roles_of(config, planned), gpu=True)), baseline)


def run(config: EvaluateConfig, plan: EvaluatePlan | None = None) -> dict[str, float]:
    """Evaluate on `data`; writes eval.json, eval_samples.jsonl, eval_chart.png."""
    plan = plan or prepare(config)
    started = time.perf_counter()
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    if config.mode == "policy":
        paths = {"policy": resolve_model(config.policy_path, "r1")}
    else:
        paths = {"actor": resolve_actor(config.actor_path), "critic": resolve_model(config.critic_path, "critic")}
    examples = plan.prepared.data["data"]
    init_ray(config.ray_address)
    roles = start_roles(roles_of(config, paths))
    try:
        report = (policy_evaluation(roles, config, paths["policy"], examples) if config.mode == "policy"
                  else critique_evaluation(roles, config, paths, examples))
    finally:
        roles.close()
    metrics = {**report.metrics, **plan.prepared.skipped_metrics(), "eval/num_examples": float(len(examples)),
               "time/elapsed_s": time.perf_counter() - started}
    if plan.baseline is not None:
        metrics.update(paired_comparison(plan.baseline, final_correct_by_question(report.records)))
    (out / "eval.json").write_text(json.dumps({**paths, "mode": config.mode, "metrics": metrics}, indent=2, sort_keys=True))
    with (out / "eval_samples.jsonl").open("w") as f:
        for rec in report.records:
            f.write(json.dumps(rec) + "\n")
    model = paths.get("policy") or paths["critic"]
    plot_metrics({"eval": metrics}, out / "eval_chart.png", title=f"{Path(model).name} on {config.data.format}")
    print(format_table({"eval": metrics}))
    if plan.baseline is not None:
        print(format_paired(metrics))
    return metrics


def policy_evaluation(roles: Roles, config: EvaluateConfig, policy_path: str, examples: list[TaskExample]) -> EvalReport:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy_path)
    c = config.policy
    prompts = [tokenizer(render_prompt(c.prompt_template, question=e.question), add_special_tokens=False).input_ids for e in examples]
    stop = list(c.stop) or list(get_prompt(c.prompt_template).stop)
    greedy = SamplingConfig(temperature=0.0, max_tokens=c.max_tokens, stop=stop, logprobs=False)
    sampled = SamplingConfig(temperature=c.temperature, max_tokens=c.max_tokens, stop=stop, logprobs=False, seed=config.seed)
    return evaluate_policy(roles["policy"], roles["scorer"], prompts, examples, greedy, sampled if c.samples else None, c.samples,
                           c.pass_k, c.maj_k, answer_extractor(verifier_of(config)))


def critique_evaluation(roles: Roles, config: EvaluateConfig, paths: dict[str, str], examples: list[TaskExample]) -> EvalReport:
    from transformers import AutoTokenizer

    actor, critic = (Speaker(roles[name], PromptFormatter(AutoTokenizer.from_pretrained(paths[name]), config.prompts)) for name in ("actor", "critic"))
    return evaluate_critique(actor, critic, oracle(roles["scorer"]), examples, config.eval, tag="eval", seed=config.seed)
