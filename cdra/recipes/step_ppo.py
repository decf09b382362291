"""Step PPO: PPO with a critic on a discriminative PRM's step scores (ALGORITHMS.md section 5).

Each step: `samples_per_prompt` samples per prompt on the policy's engines, written "Step 1:
... Step N: ..." -> the PRM pool (`cdra.runtime.prm_actor.PRMPool`, a (K+1)-class token
classifier read at each step's last token) scores every step, P(class >= 2) -> per-token
rewards (`cdra.algos.step_rewards`): each step's score at its last token, -0.1 * (log pi - log
ref) on every token, each token's reward clipped at +-5 -> the learner's `ppo` objective: GAE
(gamma 1, lambda 0.95) on the critic's values, PPO clip 0.2, value clip 0.2 -> weights to the
engines. The critic is a one-label token classifier started from the PRM's trunk
(`LearnerConfig.critic_path`), so it begins reading the steps as the PRM does.

The answer checker pays nothing by default (`outcome_weight=0`: the PRM alone); it is measured
on every batch and in evaluation. Evaluation reports greedy answer accuracy and process accuracy
(every step right, synthetic problems) with per-question records, so `python -m
cdra.recipes.compare` pairs a run with the start or with outcome-only GRPO (`jobs/cdra.py
step_weight=0`: same policy, prompts, sampling and budget).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean

from cdra.algos.experience import Sample
from cdra.algos.judge_quality import judge_quality
from cdra.algos.step_rewards import kl_penalties, step_ppo_rewards
from cdra.config import ConfigError, check
from cdra.data.example import TaskExample
from cdra.data.loaders import DatasetSpec
from cdra.data.synthetic import problem_from_question, process_correct, step_truths
from cdra.recipes.cdra import process_fields
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
from cdra.rewards.judging import steps_splitter
from cdra.runtime.learner import LearnerConfig
from cdra.runtime.objectives import Objective
from cdra.runtime.prm_actor import PRMPool, at_least_class
from cdra.runtime.roles import ActorPool, Learners, PolicyEngines, RoleSpec, RuleVerifiers, plan
from cdra.runtime.rollout import Completion, EngineConfig, SamplingConfig
from cdra.runtime.scorer import ScoreItem, ScoreResult

PRM_ROLE = "prm"
PRM_ZOO = "lpr_prm"  # train_prm's default on synthesize_process_rewards' default output


@dataclass
class StepPPOConfig:
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="outputs/step_ppo", eval_every=5))
    model_path: str = field(default="", metadata={"help": "HF dir of the policy (also the KL reference); empty: the zoo steps policy (cdra.models.zoo)"})
    prm_path: str = field(default="", metadata={"help": "HF token-classification dir of the PRM (K+1 labels, the policy's tokenizer; e.g. a train_prm output); empty: the zoo lpr_prm"})
    train_data: DatasetSpec = field(default_factory=lambda: synthetic_spec("train", 1024))
    eval_data: DatasetSpec = field(default_factory=lambda: synthetic_spec("test", 200))
    prompt_template: str = "critique_rl_inference_short"
    verifier: str = field(default="gsm8k", metadata={"help": "answer checker of evaluation (and of the outcome term when outcome_weight > 0)"})
    verifier_timeout_s: float = 10.0
    num_scorers: int = 1
    num_rollout_workers: int = 1
    num_prm_workers: int = 1
    rollout: EngineConfig = field(default_factory=lambda: EngineConfig(max_model_len=512))
    # T 0.5, 16 prompts x 4 as CDRA's default: outcome-only GRPO there is the same budget
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.5, max_tokens=64))
    max_steps: int = field(default=5, metadata={"help": "steps scored per response: the first consecutive 'Step N:' markers"})
    threshold_class: int = field(default=2, metadata={"help": "step score = P(class >= threshold_class) of the PRM's K+1 classes"})
    prm_time_limit_s: float = 60.0
    prm_eval_samples: int = field(default=1, metadata={"help": "policy samples per held-out problem whose steps measure the PRM against ground truth before training (0: skip)"})
    steps: int = 20
    rollout_batch_size: int = field(default=64, metadata={"help": "responses per step (prompts x samples_per_prompt)"})
    samples_per_prompt: int = 4
    kl_coef: float = field(default=0.1, metadata={"help": "per-token KL penalty in the reward, -kl_coef * (log pi - log ref)"})
    reward_clip: float = field(default=5.0, metadata={"help": "each token's reward is clipped to [-reward_clip, reward_clip]"})
    outcome_weight: float = field(default=0.0, metadata={"help": "weight of the answer checker's 0/1 at the last token (0: the PRM's step scores alone)"})
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    value_clip: float = 0.2
    vf_coef: float = 0.5
    epochs: int = 1
    # lm+value: the critic starts from the PRM (the recipe sets learner.critic_path to it)
    learner: LearnerConfig = field(default_factory=lambda: LearnerConfig(num_ranks=1, lr=1e-5, micro_batch_size=32, zero_stage=2,
                                                                         head="lm+value"))
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)

    def validate(self) -> None:
        check_positive(self, "steps", "num_rollout_workers", "num_prm_workers", "num_scorers", "rollout_batch_size",
                       "samples_per_prompt", "max_steps", "prm_time_limit_s", "reward_clip", "cliprange", "value_clip", "epochs",
                       "verifier_timeout_s")
        check(self.rollout_batch_size % self.samples_per_prompt == 0, "rollout_batch_size must be a multiple of samples_per_prompt")
        check(self.threshold_class >= 1, f"threshold_class must be >= 1 (class 0 and up is every step), got {self.threshold_class}")
        check(self.kl_coef >= 0, f"kl_coef must be >= 0, got {self.kl_coef}")
        check(self.outcome_weight >= 0, f"outcome_weight must be >= 0, got {self.outcome_weight}")
        check(self.vf_coef > 0, f"vf_coef must be > 0 (the critic must learn), got {self.vf_coef}")
        check(0 <= self.gamma <= 1 and 0 <= self.lam <= 1, f"gamma and lam must be in [0, 1], got {self.gamma}, {self.lam}")
        check(self.prm_eval_samples >= 0, f"prm_eval_samples must be >= 0, got {self.prm_eval_samples}")
        check(self.learner.head == "lm+value", f"learner.head must be lm+value (PPO trains a critic), got {self.learner.head!r}")
        check(not self.learner.critic_path, "learner.critic_path is set by the recipe (the PRM, prm_path); leave it empty")
        check_template(self.prompt_template, "prompt_template")
        check_engine(self.rollout, "rollout")
        check_sampling(self.sampling, "sampling")
        check_learner(self.learner, "learner")
        check_dataset(self.train_data, "train_data")
        check_dataset(self.eval_data, "eval_data")


def objective_of(config: StepPPOConfig) -> Objective:
    """PPO on the GAE advantages; the KL is in the rewards, so none in the loss."""
    return Objective(kind="ppo", cliprange=config.cliprange, value_clip=config.value_clip, vf_coef=config.vf_coef,
                     gamma=config.gamma, lam=config.lam, length_normalization="token_mean", epochs=config.epochs)


def prm_path_of(config: StepPPOConfig) -> str:
    return resolve_model(config.prm_path, PRM_ZOO)


def roles_of(config: StepPPOConfig, prm_path: str = "") -> list[RoleSpec]:
    """The policy's engines and learner (its critic from the PRM), the PRM pool, the answer
    checker, the reference. `prm_path`: the resolved PRM (planning needs none)."""
    learner = dataclasses.replace(config.learner, critic_path=prm_path)

    def build(options: list[dict]) -> PRMPool:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(resolve_model(config.model_path, "steps"))  # the PRM reads the policy's tokens
        return PRMPool(prm_path, tokenizer, steps_splitter(config.max_steps), reduction=at_least_class(config.threshold_class),
                       num_actors=len(options), time_limit_s=config.prm_time_limit_s, actor_options=options)

    return [PolicyEngines(config.rollout, config.num_rollout_workers), Learners(learner),
            ActorPool(PRM_ROLE, config.num_prm_workers, build),
            RuleVerifiers(config.verifier, config.num_scorers, config.verifier_timeout_s),
            *([config.reference.role()] if config.kl_coef > 0 else [])]


def check_prm(config: StepPPOConfig) -> str:
    """The PRM directory, checked to be a token classifier with more than `threshold_class` labels."""
    import json

    check_model_path(config.prm_path, "prm_path")
    try:
        path = prm_path_of(config)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise ConfigError(f"prm_path is empty and the zoo has no {PRM_ZOO!r} checkpoint ({e}); pass prm_path=<a train_prm output>") from e
    hf = json.loads((Path(path) / "config.json").read_text())
    architectures = hf.get("architectures") or []
    check(any(a.endswith("ForTokenClassification") for a in architectures),
          f"prm_path {path!r} is not a token-classification model (architectures {architectures})")
    labels = len(hf.get("id2label") or {}) or int(hf.get("num_labels", 2))
    check(labels > config.threshold_class, f"the PRM has {labels} classes; threshold_class {config.threshold_class} needs more")
    return path


def prepare(config: StepPPOConfig) -> Prepared:
    """Everything checked and loaded before any actor starts."""
    check_model_path(config.model_path, "model_path")
    check_verifier(config.verifier, "verifier")
    prm_path = check_prm(config)
    data = {"train_data": load_examples(config.train_data, "train_data"),
            "eval_data": load_examples(config.eval_data, "eval_data")}
    return Prepared(data, plan(roles_of(config, prm_path), gpu=True))


def run(config: StepPPOConfig, prepared: Prepared | None = None) -> dict[str, float]:
    """Train; returns the final metrics (incl. eval before/after)."""
    prepared = prepared or prepare(config)
    session = Session.start(config.run, config, model_path=config.model_path, zoo_checkpoint="steps",
                            roles=roles_of(config, prm_path_of(config)), prepared=prepared)
    try:
        train(session, config)
    finally:
        summary = session.close()
    return summary


# ----------------------------------------------------------------------------- the loop


def train(session: Session, config: StepPPOConfig) -> None:
    prm: PRMPool = session.roles[PRM_ROLE]
    objective = objective_of(config)
    stream = session.prompt_stream(session.prepared.data["train_data"])
    evaluate = lambda: evaluate_process(session, config)  # noqa: E731
    if session.step == 0:
        quality = prm_quality(session, config, prm)
        if quality:
            print("[cdra] PRM on held-out steps of the policy's samples: " + ", ".join(f"{k[4:]} {v:.3f}" for k, v in quality.items()))
        session.final_metrics.update(quality)
        evaluate()
    for step in session.steps(config.steps):
        examples = stream.next(config.rollout_batch_size // config.samples_per_prompt)
        sampling = dataclasses.replace(config.sampling, seed=config.run.seed * 1_000_003 + step * 10_007)
        groups = session.rollouts.generate([session.encode(session.prompt(config.prompt_template, e)) for e in examples],
                                           sampling, config.samples_per_prompt)
        metrics = dict(session.rollouts.last_stats)
        samples = score(session, config, prm, examples, groups, step)
        metrics.update(step_metrics(samples))
        metrics.update(prm.stats())
        metrics.update(session.learn(samples, objective))
        session.finish_step(metrics, evaluation=evaluate)


def score(session: Session, config: StepPPOConfig, prm: PRMPool, examples: list[TaskExample],
          groups: list[list[Completion]], step: int) -> list[Sample]:
    """PRM step scores and the answer check of every sample, laid on its tokens with the KL
    penalty (`step_ppo_rewards`): the samples' `token_rewards`, for the learner's GAE."""
    flat = [(e, c, i) for e, g in zip(examples, groups) for i, c in enumerate(g)]
    responses = [c.response_ids or [session.eos_id] for _, c, _ in flat]
    items = [ScoreItem(c.text, e.answer, metadata={"id": e.id}, prompt_ids=c.prompt_ids, response_ids=r)
             for (e, c, _), r in zip(flat, responses)]
    judged = prm.score(items)
    outcomes = session.scorers.score(items)
    samples = [Sample(
        prompt_ids=c.prompt_ids, response_ids=r, rollout_logprobs=c.logprobs if c.response_ids else [0.0],
        reward=sum(j.step_scores) + config.outcome_weight * o.score,
        prompt_id=e.id, group_id=step * 100_000 + n // config.samples_per_prompt, policy_version=c.policy_version,
        scorer_version=prm.version,
        metadata={"correct": o.score, "step_scores": list(j.step_scores), "process_correct": _process_correct(e, c.text),
                  "response_text": c.text, "sample_index": index, "prm_error": j.error or ""},
    ) for n, ((e, c, index), r, j, o) in enumerate(zip(flat, responses, judged, outcomes))]
    place_rewards(session, config, samples, judged, outcomes)
    return samples


def place_rewards(session: Session, config: StepPPOConfig, samples: list[Sample], judged: list[ScoreResult],
                  outcomes: list[ScoreResult]) -> None:
    """Each sample's per-token rewards. The KL is taken against the learner's log-probs of the
    policy that sampled them (the same numerics as the reference's: 0 before the first update),
    not the engine's."""
    if config.kl_coef > 0:
        session.attach_reference_logprobs(samples)
        logprobs = session.learners.logprobs(samples)
    else:
        logprobs = [[0.0] * len(s.response_ids) for s in samples]
    for s, lp, j, o in zip(samples, logprobs, judged, outcomes):
        ref = s.ref_logprobs if s.ref_logprobs is not None else lp
        s.token_rewards = step_ppo_rewards(j.step_spans, j.step_scores, lp, ref, config.kl_coef, config.reward_clip,
                                           config.outcome_weight * o.score)
        s.metadata["kl_reward"] = sum(kl_penalties(lp, ref, config.kl_coef))


def _process_correct(example: TaskExample, response: str) -> float | None:
    problem = problem_from_question(example.question)
    return None if problem is None else float(process_correct(problem, response))


def step_metrics(samples: list[Sample]) -> dict[str, float]:
    scores = [x for s in samples for x in s.metadata["step_scores"]]
    known = [s for s in samples if s.metadata["process_correct"] is not None]
    rewarded = [s for s in known if s.metadata["correct"] > 0.5]
    out = {
        "reward/mean": fmean(s.reward for s in samples),
        "reward/token_sum": fmean(sum(s.token_rewards) for s in samples),
        "reward/kl": fmean(s.metadata["kl_reward"] for s in samples),
        "reward/answer_correct": fmean(s.metadata["correct"] for s in samples),
        "prm/step_score_mean": fmean(scores) if scores else 0.0,
        "prm/steps_per_response": len(scores) / len(samples),
        "prm/failed_responses": float(sum(bool(s.metadata["prm_error"]) for s in samples)),
        "rollout/response_tokens_mean": fmean(len(s.response_ids) for s in samples),
    }
    if known:
        out["reward/process_correct"] = fmean(s.metadata["process_correct"] for s in known)
    if rewarded:  # the thesis of process rewards: a right answer reached through a wrong step
        out["reward/right_answer_wrong_steps"] = fmean(s.metadata["process_correct"] < 0.5 for s in rewarded)
    return out


# ----------------------------------------------------------------------------- evaluation


def evaluate_process(session: Session, config: StepPPOConfig) -> dict[str, float]:
    """Greedy answer accuracy and process accuracy, with per-question records (as CDRA's)."""
    return session.evaluate(session.prepared.data["eval_data"], config.prompt_template, config.sampling, record_fields=process_fields)


def prm_quality(session: Session, config: StepPPOConfig, prm: PRMPool) -> dict[str, float]:
    """The PRM against ground truth on held-out steps: ``prm_eval_samples`` samples of the
    policy per held-out synthetic problem, each step's score against `step_truths` of the step
    texts it read, its own token spans (a score > 0.5 means "right")."""
    examples = [e for e in session.prepared.data["eval_data"] if problem_from_question(e.question) is not None]
    if not examples or config.prm_eval_samples == 0:
        return {}
    sampling = dataclasses.replace(config.sampling, seed=config.run.seed * 1_000_003 + 999_983)
    groups = session.rollouts.generate([session.encode(session.prompt(config.prompt_template, e)) for e in examples],
                                       sampling, config.prm_eval_samples)
    flat = [(e, c) for e, g in zip(examples, groups) for c in g if c.response_ids]
    items = [ScoreItem(c.text, e.answer, prompt_ids=c.prompt_ids, response_ids=c.response_ids) for e, c in flat]
    scores: list[float] = []
    labels: list[bool] = []
    unlabelled = 0
    for (e, _), item, judged in zip(flat, items, prm.score(items)):
        steps = [session.tokenizer.decode(item.response_ids[a:b], skip_special_tokens=True) for a, b in judged.step_spans]
        truth = step_truths(problem_from_question(e.question), steps)  # the texts the PRM read
        if truth is None or judged.error or len(truth) != len(judged.step_scores):
            unlabelled += 1
            continue
        scores += judged.step_scores
        labels += truth
    out = {f"prm/{k}": v for k, v in judge_quality(scores, labels, 0.5).items()}
    out["prm/unlabelled_responses"] = float(unlabelled)
    return out
