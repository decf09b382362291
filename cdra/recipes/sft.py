"""Supervised fine-tuning on (prompt, response) pairs (ALGORITHMS.md §1), through the learner group.

Each step: the next `batch_size` examples of the (epoch-shuffled, resumable) stream -> Samples
(prompt = the rendered template, response = the training target + EOS) -> one learner update
with response-only cross-entropy -> every `eval_every` steps a greedy evaluation on the rollout
engines (which exist only for that).

The training target of an example:
- synthetic data: the task's own worked solution in the template's format: `format_r1_solution`
  for r1 templates, else `" " + format_steps_solution` (the zoo checkpoints' conventions).
- other data: `example.solution`; for r1 templates wrapped as `" {solution} </think>
  <answer>{answer}</answer>"` (`response_format=solution` keeps it as is, e.g. data already in
  r1 form). A row without a solution is an error naming it, or a counted skip with
  `on_error=skip`.
(prompt, response) tables for a critic or a PRM: `format=table`, `question_key` = the prompt
column, `solution_key` = the response column, `prompt_template=question_only`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from cdra.algos.experience import Sample
from cdra.config import check
from cdra.data.example import TaskExample
from cdra.data.loaders import DatasetSpec
from cdra.data.prompts import PROMPTS, get_prompt, render_prompt
from cdra.data.synthetic import ArithmeticProblem, format_r1_solution, make_problems
from cdra.recipes.common import (
    Prepared,
    RunConfig,
    check_dataset,
    check_engine,
    check_learner,
    check_model_path,
    check_positive,
    check_sampling,
    check_verifier,
    load_examples,
    synthetic_spec,
)
from cdra.recipes.session import Session
from cdra.runtime.learner import LearnerConfig
from cdra.runtime.objectives import Objective
from cdra.runtime.roles import Learners, PolicyEngines, RoleSpec, RuleVerifiers, plan
from cdra.runtime.rollout import EngineConfig, SamplingConfig

R1_TEMPLATES = ("r1_zero", "r1_short")
SYNTHETIC_FORMATS = ("synthetic", "synthetic_mcq")


@dataclass
class SFTConfig:
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="outputs/sft", eval_every=50))
    model_path: str = field(default="", metadata={"help": "HF model dir; empty: the embedded untrained tiny model"})
    train_data: DatasetSpec = field(default_factory=lambda: synthetic_spec("train", 1400))
    eval_data: DatasetSpec = field(default_factory=lambda: synthetic_spec("test", 128))
    prompt_template: str = "r1_short"
    response_format: Literal["auto", "solution", "r1"] = field(
        default="auto", metadata={"help": "non-synthetic targets: auto = r1-wrapped for r1 templates, else the solution as is"})
    evaluate: bool = field(default=True, metadata={"help": "greedy eval with the verifier every run.eval_every steps"})
    verifier: str = field(default="auto", metadata={"help": "eval verifier; auto: r1_zero for r1 templates, else the eval data's kind"})
    verifier_timeout_s: float = 10.0
    num_scorers: int = 1
    num_rollout_workers: int = field(default=1, metadata={"help": "vLLM engines, used for evaluation only"})
    rollout: EngineConfig = field(default_factory=lambda: EngineConfig(max_model_len=512))
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.0, max_tokens=96),
                                     metadata={"help": "eval generation (greedy); empty stop: the template's stop strings"})
    learner: LearnerConfig = field(default_factory=lambda: LearnerConfig(num_ranks=1, lr=1e-3, micro_batch_size=32))
    steps: int = field(default=300, metadata={"help": "optimizer steps; 0: `epochs` passes over train_data"})
    epochs: int = field(default=1, metadata={"help": "passes over train_data when steps=0"})
    batch_size: int = field(default=64, metadata={"help": "examples per optimizer step"})
    max_seq_len: int = field(default=512, metadata={"help": "prompt + response tokens; longer responses are truncated"})

    def validate(self) -> None:
        check(self.steps >= 0, "steps must be >= 0 (0: derive from epochs)")
        check(self.epochs >= 1, "epochs must be >= 1")
        check(self.batch_size >= 1, "batch_size must be >= 1")
        check(self.max_seq_len >= 2, "max_seq_len must be >= 2")
        check(self.num_rollout_workers >= 1, "num_rollout_workers must be >= 1 (the evaluation engines)")
        check_positive(self, "num_scorers", "verifier_timeout_s")
        check(self.prompt_template in PROMPTS, f"unknown prompt_template {self.prompt_template!r}; valid: {sorted(PROMPTS)}")
        check(self.train_data.format != "table" or self.train_data.solution_key is not None,
              "train_data: a table needs solution_key naming the response column")
        check_engine(self.rollout, "rollout")
        check_sampling(self.sampling, "sampling")
        check_learner(self.learner, "learner")
        check_dataset(self.train_data, "train_data")
        check_dataset(self.eval_data, "eval_data")


def prepare(config: SFTConfig) -> Prepared:
    """Model path, data and verifier checked before any actor starts (`run` reloads the data)."""
    check_model_path(config.model_path, "model_path")
    train = load_examples(config.train_data, "train_data")
    training_pairs(config.train_data, train, config.prompt_template, config.response_format)
    evaluation = load_examples(config.eval_data, "eval_data") if config.evaluate else []
    check_verifier(eval_verifier(config, evaluation), "verifier")
    data = {"train_data": train, **({"eval_data": evaluation} if config.evaluate else {})}
    return Prepared(data, plan(roles_of(config, config.learner, eval_verifier(config, evaluation)), gpu=True))


def roles_of(config: SFTConfig, learner: LearnerConfig, verifier: str) -> list[RoleSpec]:
    """The learner, and the engines and verifiers of its evaluation (synced before each one)."""
    return [PolicyEngines(config.rollout, config.num_rollout_workers), Learners(learner),
            RuleVerifiers(verifier, config.num_scorers, config.verifier_timeout_s)]


# ----------------------------------------------------------------------------- training targets


def synthetic_problems(spec: DatasetSpec) -> list[ArithmeticProblem]:
    """The problems behind a synthetic spec's examples: example `...-{i}` is problem i (both
    synthetic formats draw `make_problems` with the spec's arguments, prefix-stable in n)."""
    return make_problems(spec.num_examples, spec.seed, spec.synthetic_config(), spec.split)


def synthetic_target(example: TaskExample, problem: ArithmeticProblem, template: str) -> str:
    if template in R1_TEMPLATES:
        return format_r1_solution(problem, answer=example.answer)
    return " " + (example.solution or "")


def solution_target(example: TaskExample, template: str, response_format: str) -> str | None:
    """The target of a non-synthetic example, or None when it has no solution."""
    if not example.solution:
        return None
    wrap = response_format == "r1" or (response_format == "auto" and template in R1_TEMPLATES)
    return f" {example.solution} </think> <answer>{example.answer}</answer>" if wrap else example.solution


def training_pairs(spec: DatasetSpec, examples: list[TaskExample], template: str, response_format: str) -> list[TaskExample]:
    """The examples with `solution` replaced by their training target (see module docstring).

    Examples without a solution raise (naming the example) or, with `on_error=skip`, are
    dropped and counted.
    """
    problems = synthetic_problems(spec) if spec.format in SYNTHETIC_FORMATS else None
    out, missing = [], []
    for example in examples:
        if problems is not None:
            target = synthetic_target(example, problems[int(example.id.rsplit("-", 1)[1])], template)
        else:
            target = solution_target(example, template, response_format)
        if target is None:
            if spec.on_error == "raise":
                raise ValueError(f"train_data: example {example.id!r} ({spec.format} {spec.path or ''}) has no solution "
                                 "to train on; set solution_key, or on_error=skip to drop such rows")
            missing.append(example.id)
            continue
        out.append(dataclasses.replace(example, solution=target))
    if missing:
        print(f"[cdra] train_data: skipped {len(missing)} examples without a solution (on_error=skip); first: {missing[0]!r}")
    if not out:
        raise ValueError("train_data: no example has a solution to train on")
    return out


def sft_sample(prompt_ids: list[int], response_ids: list[int], example_id: str, group_id: int, version: int,
               max_seq_len: int) -> Sample:
    """A response-only training sample, its response cut to fit `max_seq_len` tokens in all."""
    room = max_seq_len - len(prompt_ids)
    if room < 1:
        raise ValueError(f"example {example_id!r}: prompt has {len(prompt_ids)} tokens, no room for a response "
                         f"within max_seq_len={max_seq_len}")
    return Sample(prompt_ids=prompt_ids, response_ids=response_ids[:room], prompt_id=example_id,
                  group_id=group_id, policy_version=version)


def eval_verifier(config: SFTConfig, eval_examples: list[TaskExample]) -> str:
    if config.verifier != "auto":
        return config.verifier
    if config.prompt_template in R1_TEMPLATES or not eval_examples:
        return "r1_zero"
    return eval_examples[0].kind


def total_steps(config: SFTConfig, num_examples: int) -> int:
    return config.steps or math.ceil(config.epochs * num_examples / config.batch_size)


# ----------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class SFTPair:
    """One training pair: the rendered prompt and its target (EOS is appended); ``emphasis``:
    character offsets in ``target`` whose token weighs ``emphasis_weight`` in the loss."""

    id: str
    prompt: str
    target: str
    emphasis: tuple[int, ...] = ()


def start_session(config: SFTConfig, total: int, verifier: str = "r1_zero") -> Session:
    """The SFT run's actors; a cosine lr schedule spans ``total`` steps unless set explicitly."""
    learner = dataclasses.replace(config.learner, total_steps=config.learner.total_steps or total)
    return Session.start(config.run, config, model_path=config.model_path, zoo_checkpoint="none",
                         roles=roles_of(config, learner, verifier))


def response_tokens(session: Session, pair: SFTPair, emphasis_weight: float) -> tuple[list[int], list[float] | None]:
    """Target ids + EOS, and per-token loss weights when the pair emphasises some tokens (the
    token at offset k is the first token of `target[k:]`, exact for the byte tokenizer)."""
    ids = session.encode(pair.target) + [session.eos_id]
    if not pair.emphasis or emphasis_weight == 1.0:
        return ids, None
    weights = [1.0] * len(ids)
    for offset in pair.emphasis:
        weights[len(session.encode(pair.target[:offset]))] = emphasis_weight
    return ids, weights


def fit(session: Session, config: SFTConfig, pairs: list[SFTPair], evaluate: Callable[[], dict[str, float]] | None = None,
        stop_when: Callable[[dict[str, float]], bool] | None = None, emphasis_weight: float = 1.0) -> None:
    """The SFT loop: `config.batch_size` pairs per step from an epoch-shuffled stream, one learner
    update each; `evaluate` every `run.eval_every` steps, after which `stop_when(metrics)` may
    end training early (the run then counts as finished at that step)."""
    train = session.prompt_stream(pairs)
    objective = Objective(kind="sft", epochs=1)
    if session.step == 0 and evaluate is not None:
        evaluate()
    for step in session.steps(total_steps(config, len(pairs))):
        batch = train.next(config.batch_size)
        samples, truncated = [], 0
        for i, pair in enumerate(batch):
            prompt_ids = session.encode(pair.prompt)
            response_ids, weights = response_tokens(session, pair, emphasis_weight)
            truncated += len(prompt_ids) + len(response_ids) > config.max_seq_len
            sample = sft_sample(prompt_ids, response_ids, pair.id, step * config.batch_size + i, session.version, config.max_seq_len)
            sample.token_weights = None if weights is None else weights[: len(sample.response_ids)]
            samples.append(sample)
        metrics = {"data/truncated": float(truncated),
                   "data/response_tokens_mean": sum(len(s.response_ids) for s in samples) / len(samples)}
        metrics.update(session.learn(samples, objective, sync=False))  # engines only generate to evaluate
        evaluated = session.finish_step(metrics, evaluation=evaluate)
        if evaluated and stop_when is not None and stop_when(metrics):
            session.end_here()
            break


def run(config: SFTConfig) -> dict[str, float]:
    """Train; returns the final metrics (incl. eval before/after when evaluating)."""
    examples = training_pairs(config.train_data, load_examples(config.train_data, "train_data"),
                              config.prompt_template, config.response_format)
    pairs = [SFTPair(e.id, render_prompt(config.prompt_template, question=e.question), e.solution or "") for e in examples]
    evaluation = load_examples(config.eval_data, "eval_data") if config.evaluate else []
    session = start_session(config, total_steps(config, len(pairs)), eval_verifier(config, evaluation))
    sampling = dataclasses.replace(config.sampling, stop=list(config.sampling.stop) or list(get_prompt(config.prompt_template).stop))
    evaluate = (lambda: session.evaluate(evaluation, config.prompt_template, sampling)) if config.evaluate else None
    try:
        fit(session, config, pairs, evaluate)
    finally:
        summary = session.close()
    return summary
