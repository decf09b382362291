"""GRPO with outcome rewards (ALGORITHMS.md §1), sync or async.

Each step: sample `group_size` responses for each of `rollout_batch_size / group_size` prompts
on the rollout engines -> score them with the verifier pool -> group-normalized advantages ->
(reference log-probs if KL) -> replay store -> learner update(s) -> broadcast weights.
In async mode the next batch is generated while the learner trains, at most `max_staleness`
policy versions behind, and the loss is importance-corrected with the rollout log-probs.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field
from typing import Literal

import torch

from cdra.algos import group_normalize
from cdra.algos.experience import Sample
from cdra.config import check
from cdra.data.example import TaskExample
from cdra.data.loaders import DatasetSpec
from cdra.recipes.common import (
    Prepared,
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
    synthetic_spec,
)
from cdra.recipes.session import Session
from cdra.runtime.groups import RolloutJob
from cdra.runtime.learner import LearnerConfig
from cdra.runtime.objectives import Objective, k1_loss_problem
from cdra.runtime.roles import Learners, PolicyEngines, Reference, RoleSpec, RuleVerifiers, plan
from cdra.runtime.rollout import Completion, EngineConfig, SamplingConfig
from cdra.runtime.scorer import ScoreItem


def _default_sampling() -> SamplingConfig:
    # T 0.7 (ALGORITHMS.md: 1.0): at 1.0 the tiny policy's samples reach the right answer through
    # wrong steps so often that rewarding them lowered its greedy accuracy (docs/results/grpo.md)
    return SamplingConfig(temperature=0.7, max_tokens=96, min_tokens=4, stop=["</answer>"])


@dataclass
class GRPOConfig:
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="outputs/grpo"))
    model_path: str = field(default="", metadata={"help": "HF model dir; empty: the zoo r1 policy (cdra.models.zoo)"})
    train_data: DatasetSpec = field(default_factory=lambda: synthetic_spec("train", 1400))
    eval_data: DatasetSpec = field(default_factory=lambda: synthetic_spec("test", 128))
    eval_samples: int = field(default=4, metadata={"help": "samples per held-out problem at the rollout temperature (eval/sampled_reward); 0: greedy only"})
    prompt_template: str = "r1_short"
    verifier: str = field(default="r1_zero", metadata={"help": "built-in verifier or module:function"})
    verifier_timeout_s: float = 10.0
    num_scorers: int = 2
    num_rollout_workers: int = 2
    rollout: EngineConfig = field(default_factory=lambda: EngineConfig(max_model_len=512))
    sampling: SamplingConfig = field(default_factory=_default_sampling)
    # lr 1e-5: at 3e-5 the zoo r1 policy's greedy held-out reward fell in 30 steps (T 1.0 and 0.7)
    learner: LearnerConfig = field(default_factory=lambda: LearnerConfig(num_ranks=2, lr=1e-5, micro_batch_size=32, zero_stage=2))
    steps: int = 30
    rollout_batch_size: int = field(default=128, metadata={"help": "responses per step (prompts x group_size)"})
    group_size: int = 8
    train_batch_size: int = field(default=128, metadata={"help": "responses per optimizer step"})
    loss_type: Literal["no_baseline", "reinforce_with_baseline", "grpo_clip"] = "reinforce_with_baseline"
    normalize_by_std: bool = True
    advantage_eps: float = 1e-6
    cliprange: float = 0.2
    epochs: int = 1
    length_normalization: Literal["mean", "constant"] = "mean"
    kl_coef: float = 0.0
    kl_kind: Literal["k1", "k2", "k3"] = "k3"
    mode: Literal["sync", "async"] = "sync"
    max_staleness: int = 1
    async_is_cap: float = 2.0

    def validate(self) -> None:
        check_positive(self, "steps", "num_rollout_workers", "num_scorers", "rollout_batch_size", "train_batch_size",
                       "epochs", "cliprange", "verifier_timeout_s", "async_is_cap")
        check(self.group_size >= 2, f"group_size must be >= 2 (advantages are relative to the group), got {self.group_size}")
        check(self.rollout_batch_size % self.group_size == 0, "rollout_batch_size must be a multiple of group_size")
        check(self.rollout_batch_size % self.train_batch_size == 0, "rollout_batch_size must be a multiple of train_batch_size")
        check(self.eval_samples >= 0, "eval_samples must be >= 0")
        check(self.kl_coef >= 0, f"kl_coef must be >= 0, got {self.kl_coef}")
        check(self.advantage_eps >= 0, f"advantage_eps must be >= 0, got {self.advantage_eps}")
        check(self.max_staleness >= 0, f"max_staleness must be >= 0, got {self.max_staleness}")
        check_template(self.prompt_template, "prompt_template")
        check_engine(self.rollout, "rollout")
        check_sampling(self.sampling, "sampling")
        check_learner(self.learner, "learner")
        check_dataset(self.train_data, "train_data")
        check_dataset(self.eval_data, "eval_data")
        check(self.mode == "sync" or self.max_staleness >= 1, "async mode needs max_staleness >= 1")
        problem = k1_loss_problem(self.kl_coef, self.kl_kind)
        check(problem is None, f"{problem}; use kl_kind=k2 or k3")


def objective_of(config: GRPOConfig) -> Objective:
    is_async = config.mode == "async"
    return Objective(
        kind="policy_gradient", loss_type=config.loss_type, cliprange=config.cliprange,
        length_normalization=config.length_normalization, normalize_constant=float(config.sampling.max_tokens),
        kl_coef=config.kl_coef, kl_kind=config.kl_kind, epochs=config.epochs,
        old_logprobs_source="rollout" if is_async else "learner",
        is_cap=config.async_is_cap if is_async and config.loss_type != "grpo_clip" else None,
    )


def roles_of(config: GRPOConfig) -> list[RoleSpec]:
    """The policy's engines and learner group, the verifiers, and with a KL term the reference."""
    return [PolicyEngines(config.rollout, config.num_rollout_workers), Learners(config.learner),
            RuleVerifiers(config.verifier, config.num_scorers, config.verifier_timeout_s),
            *([Reference()] if config.kl_coef > 0 else [])]


def prepare(config: GRPOConfig) -> Prepared:
    """Everything checked and loaded before any actor starts."""
    check_model_path(config.model_path, "model_path")
    check_verifier(config.verifier, "verifier")
    data = {"train_data": load_examples(config.train_data, "train_data"),
            "eval_data": load_examples(config.eval_data, "eval_data")}
    return Prepared(data, plan(roles_of(config), gpu=True))


def run(config: GRPOConfig, prepared: Prepared | None = None) -> dict[str, float]:
    """Train; returns the final metrics (incl. eval before/after)."""
    session = start_session(config, prepared)
    try:
        train(session, config)
    finally:
        summary = session.close()
    return summary


def start_session(config: GRPOConfig, prepared: Prepared | None = None) -> Session:
    is_async = config.mode == "async"
    return Session.start(config.run, config, model_path=config.model_path, zoo_checkpoint="r1", roles=roles_of(config),
                         replay_mode="off_policy" if is_async else "on_policy", max_staleness=config.max_staleness if is_async else 0,
                         prepared=prepared or prepare(config))


# ----------------------------------------------------------------------------- the loop


def train(session: Session, config: GRPOConfig) -> None:
    """The GRPO loop on a started session."""
    rollouts = Generation(session, config)
    objective = objective_of(config)
    evaluate = lambda: session.evaluate(session.prepared.data["eval_data"], config.prompt_template, config.sampling,  # noqa: E731
                                        samples=config.eval_samples)
    if session.step == 0:
        evaluate()
    for step in session.steps(config.steps):
        examples, groups, generated_with = rollouts.next()
        metrics = dict(session.rollouts.last_stats)
        samples = score_and_advantage(session, config, examples, groups, step)
        metrics.update(batch_metrics(samples, examples, staleness=session.version - generated_with))
        metrics.update(session.learn(samples, objective, config.rollout_batch_size // config.train_batch_size))
        session.uncollected_prompts = rollouts.uncollected_prompts  # a checkpoint now must not skip them
        session.finish_step(metrics, evaluation=evaluate)


class Generation:
    """Rollout batches in flight: in sync mode each step's batch is generated when the step
    needs it; in async mode up to `max_staleness` more are generated while the learner trains."""

    def __init__(self, session: Session, config: GRPOConfig) -> None:
        self.session, self.config = session, config
        self.stream = session.prompt_stream(session.prepared.data["train_data"])
        self.prompts_per_step = config.rollout_batch_size // config.group_size
        self.in_flight: list[tuple[RolloutJob, list[TaskExample], int]] = []
        self.next_step = session.step  # the step the next submitted batch is for: its seed, the same after a resume

    def submit(self) -> None:
        examples = self.stream.next(self.prompts_per_step)
        ids = [self.session.encode(self.session.prompt(self.config.prompt_template, e)) for e in examples]
        sampling = dataclasses.replace(self.config.sampling, seed=self.config.run.seed * 1_000_003 + self.next_step * 10_007)
        self.next_step += 1
        self.in_flight.append((self.session.rollouts.submit(ids, sampling, self.config.group_size), examples, self.session.version))

    def next(self) -> tuple[list[TaskExample], list[list[Completion]], int]:
        """This step's examples, a group of completions each, and the policy version that wrote them."""
        if not self.in_flight:
            self.submit()
        job, examples, generated_with = self.in_flight.pop(0)
        groups = self.session.rollouts.collect(job)
        if self.config.mode == "async":
            while len(self.in_flight) < self.config.max_staleness and self.session.step + len(self.in_flight) + 1 < self.config.steps:
                self.submit()  # generated by the engines while this step trains
        return examples, groups, generated_with

    @property
    def uncollected_prompts(self) -> int:
        return self.prompts_per_step * len(self.in_flight)


def score_and_advantage(session: Session, config: GRPOConfig, examples: list[TaskExample], groups: list[list[Completion]],
                        step: int) -> list[Sample]:
    """Verifier rewards -> group-normalized advantages -> one Sample per completion."""
    flat = [(example, completion, index) for example, group in zip(examples, groups) for index, completion in enumerate(group)]
    results = session.scorers.score([ScoreItem(c.text, e.answer, metadata={"id": e.id}) for e, c, _ in flat])
    raw = torch.tensor([r.score for r in results], dtype=torch.float32)
    advantages = group_normalize(raw, config.group_size, config.advantage_eps, config.normalize_by_std).view(-1)
    return [Sample(
        prompt_ids=completion.prompt_ids, response_ids=completion.response_ids or [session.eos_id],
        rollout_logprobs=completion.logprobs if completion.response_ids else [0.0],
        reward=float(raw[i]), advantage=float(advantages[i]),
        prompt_id=example.id, group_id=step * 100_000 + i // config.group_size,
        policy_version=completion.policy_version, scorer_version=session.scorers.version,
        metadata={"format_reward": result.details.get("format_reward", 0.0), "ground_truth": example.answer, "sample_index": index,
                  "response_text": completion.text, "scorer_error": result.error or ""},
    ) for i, ((example, completion, index), result) in enumerate(zip(flat, results))]


def batch_metrics(samples: list[Sample], examples: list[TaskExample], staleness: int) -> dict[str, float]:
    rewards = torch.tensor([s.reward for s in samples])
    return {
        "reward/mean": float(rewards.mean()), "reward/max": float(rewards.max()),
        "reward/format": float(torch.tensor([s.metadata["format_reward"] for s in samples]).mean()),
        "async/staleness": float(staleness),
        "rollout/response_tokens_mean": float(sum(len(s.response_ids) for s in samples) / len(samples)),
        "data/prompt_hash": float(zlib.crc32(",".join(e.id for e in examples).encode()) % 1_000_000),
    }
