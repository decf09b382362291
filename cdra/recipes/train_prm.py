"""Train the LPR process reward model (ALGORITHMS.md section 5) through the learner group.

Input: the synthesize job's labelled states (one row per state: the rendered policy prompt, the
response text through step ``step_index`` and its value 0..K = completions from there that
reached the gold answer; a full solution's value is K * correct). Each state is one PRM example:
the prompt and the prefix in the policy's tokens, class = value at the token that ends the
prefix's last step (the token PRMPool reads that step at), IGNORE everywhere else. The PRM
starts from the policy checkpoint with a fresh (K+1)-class token-classification head
(`cdra.models.heads`), trained with the `prm` objective (cross entropy at the labelled tokens).

Evaluation (every ``run.eval_every`` steps and at the end) serves the current weights with
`PRMPool` and reads P(class >= 2) at every step end of ``best_of`` policy samples per held-out
question (frozen policy engines):
- PRM quality: each step's score against the synthetic task's ground truth (`step_truths`):
  accuracy at threshold 0.5 and the ROC AUC of right vs wrong steps.
- Best-of-N on the same samples: the PRM's pick by solution score vs majority vote over the
  extracted answers vs a seeded random pick vs the oracle (any sample correct).
"""

from __future__ import annotations

import dataclasses
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from cdra.algos.experience import IGNORE_LABEL, Sample
from cdra.algos.judge_quality import judge_quality
from cdra.algos.prm_scores import SolutionScore, oracle_correct, pick_by_score, pick_majority, pick_random, solution_score
from cdra.config import ConfigError, check
from cdra.data.example import TaskExample
from cdra.data.loaders import DatasetSpec
from cdra.data.synthetic import problem_from_question, step_truths
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
    resolve_model,
    synthetic_spec,
)
from cdra.recipes.evaluation import answer_extractor
from cdra.recipes.lpr_synthesize import read_states
from cdra.recipes.session import Session
from cdra.rewards.judging import incremental_offsets, steps_splitter, token_spans
from cdra.runtime.learner import LearnerConfig
from cdra.runtime.objectives import Objective
from cdra.runtime.roles import FrozenEngines, Learners, RoleSpec, RuleVerifiers, plan
from cdra.runtime.rollout import EngineConfig, SamplingConfig
from cdra.runtime.scorer import ScoreItem

SOLUTION_SCORES = ("product", "min", "sum", "last")
POLICY_ROLE = "policy"  # frozen engines: the learner trains the PRM, never the policy they sample


@dataclass
class TrainPRMConfig:
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="outputs/train_prm", eval_every=1000, checkpoint_every=50))
    model_path: str = field(default="", metadata={"help": "HF dir of the policy the PRM starts from (and that is sampled in evaluation); empty: the zoo steps policy"})
    states_dir: str = field(default="outputs/synthesize_process_rewards/process_rewards",
                            metadata={"help": "the synthesize job's labelled states (a datasets parquet dir)"})
    eval_data: DatasetSpec = field(default_factory=lambda: synthetic_spec("test", 100))
    prompt_template: str = field(default="critique_rl_inference_short", metadata={"help": "the policy's prompt in evaluation"})
    verifier: str = "gsm8k"
    verifier_timeout_s: float = 10.0
    num_scorers: int = 1
    num_rollout_workers: int = 1
    rollout: EngineConfig = field(default_factory=lambda: EngineConfig(max_model_len=512))
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.7, max_tokens=64),
                                     metadata={"help": "the policy's evaluation samples (best-of-N and the steps PRM quality reads)"})
    best_of: int = field(default=16, metadata={"help": "policy samples per held-out question (0: train only)"})
    solution_score: SolutionScore = field(default="product", metadata={"help": "how best-of-N reduces a sample's step scores"})
    threshold_class: int = field(default=2, metadata={"help": "step score = P(class >= threshold_class)"})
    max_steps: int = field(default=5, metadata={"help": "steps read per response: the first consecutive 'Step N:' markers"})
    prm_time_limit_s: float = 300.0
    # lr 5e-4 x 150 and 2e-3 x 300 steps left the tiny PRM at its class prior; at 1e-3, 1000 steps did no
    # better than 600 (held-out step AUC 0.55 vs 0.58, docs/results/lpr.md)
    steps: int = 600
    batch_size: int = 64
    max_seq_len: int = 512
    learner: LearnerConfig = field(default_factory=lambda: LearnerConfig(num_ranks=1, lr=1e-3, micro_batch_size=64, head="classifier",
                                                                         num_labels=4))

    def validate(self) -> None:
        check_positive(self, "steps", "batch_size", "num_rollout_workers", "num_scorers", "verifier_timeout_s", "max_steps",
                       "prm_time_limit_s")
        check(self.best_of >= 0, f"best_of must be >= 0, got {self.best_of}")
        check(self.max_seq_len >= 16, f"max_seq_len must be >= 16, got {self.max_seq_len}")
        check(self.learner.head == "classifier", f"learner.head must be classifier (a token-classification PRM), got {self.learner.head!r}")
        check(1 <= self.threshold_class < self.learner.num_labels,
              f"threshold_class must be in [1, learner.num_labels={self.learner.num_labels}), got {self.threshold_class}")
        check(bool(self.states_dir), "states_dir must not be empty")
        check_template(self.prompt_template, "prompt_template")
        check_engine(self.rollout, "rollout")
        check_sampling(self.sampling, "sampling")
        check_learner(self.learner, "learner")
        check_dataset(self.eval_data, "eval_data")


# ----------------------------------------------------------------------------- states -> PRM examples


def read_state_rows(directory: str) -> list[dict]:
    """The synthesize job's states (`read_states`), its ValueError as a one-line config error."""
    try:
        return read_states(Path(directory).expanduser())
    except ValueError as e:
        raise ConfigError(f"states_dir: {e}") from e


def check_states(rows: list[dict], num_labels: int) -> int:
    """K (completions per prefix) of the rows: one K for all, values in 0..K, K + 1 classes."""
    ks = sorted({int(r["k"]) for r in rows})
    if len(ks) != 1:
        raise ConfigError(f"states_dir: rows mix K values {ks}; a PRM has one class count")
    k = ks[0]
    if k + 1 != num_labels:
        raise ConfigError(f"learner.num_labels must be K + 1 = {k + 1} for these states (K = {k}), got {num_labels}")
    bad = next((r for r in rows if not 0 <= int(r["value"]) <= k), None)
    if bad is not None:
        raise ConfigError(f"states_dir: state {bad['question_id']!r} step {bad['step_index']} has value {bad['value']} outside 0..{k}")
    return k


def last_step_end(response_ids: list[int], decode, split) -> int | None:
    """Index of the token that ends the last step of ``response_ids`` (the policy tokenizer's
    incremental decode, split as PRMPool splits it); None when the text holds no step."""
    text, offsets = incremental_offsets(response_ids, decode)
    spans = [(s, e) for s, e in token_spans(offsets, list(split(text))) if e > s]
    return spans[-1][1] - 1 if spans else None


def prm_example(prompt_ids: list[int], response_ids: list[int], value: int, end: int, example_id: str, group_id: int) -> Sample:
    """One state as a PRM sample: class ``value`` at response token ``end``, IGNORE elsewhere."""
    labels = [IGNORE_LABEL] * len(response_ids)
    labels[end] = value
    return Sample(prompt_ids=prompt_ids, response_ids=response_ids, token_labels=labels, prompt_id=example_id, group_id=group_id)


def state_examples(rows: list[dict], tokenizer, split, max_seq_len: int) -> tuple[list[Sample], int]:
    """PRM samples of the states, cut after their labelled token (a causal PRM reads nothing
    later); returns them and the number of states dropped (no step, or too long)."""
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    out, dropped = [], 0
    for i, row in enumerate(rows):
        prompt_ids = tokenizer(row["prompt"], add_special_tokens=False).input_ids
        response_ids = tokenizer(row["prefix"], add_special_tokens=False).input_ids
        end = last_step_end(response_ids, decode, split) if prompt_ids else None
        if end is None or len(prompt_ids) + end + 1 > max_seq_len:
            dropped += 1
            continue
        out.append(prm_example(prompt_ids, response_ids[: end + 1], int(row["value"]), end,
                               f"{row['question_id']}/{row['kind']}{row['step_index']}", i))
    return out, dropped


# ----------------------------------------------------------------------------- run


def roles_of(config: TrainPRMConfig) -> list[RoleSpec]:
    """Frozen policy engines (evaluation samples), the PRM's learner, the answer checker."""
    return [FrozenEngines(POLICY_ROLE, resolve_model(config.model_path, "steps"), config.rollout, config.num_rollout_workers),
            Learners(config.learner), RuleVerifiers(config.verifier, config.num_scorers, config.verifier_timeout_s)]


def prepare(config: TrainPRMConfig) -> Prepared:
    """States, K, eval data and verifier checked before any actor starts."""
    check_model_path(config.model_path, "model_path")
    check_verifier(config.verifier, "verifier")
    check_states(read_state_rows(config.states_dir), config.learner.num_labels)
    data = {"eval_data": load_examples(config.eval_data, "eval_data")} if config.best_of else {}
    return Prepared(data, plan(roles_of(config), gpu=True))


def run(config: TrainPRMConfig, prepared: Prepared | None = None) -> dict[str, float]:
    prepared = prepared or prepare(config)
    rows = read_state_rows(config.states_dir)
    session = Session.start(config.run, config, model_path=config.model_path, zoo_checkpoint="steps", roles=roles_of(config),
                            prepared=prepared)
    try:
        train(session, config, rows)
    finally:
        summary = session.close()
    return summary


def train(session: Session, config: TrainPRMConfig, rows: list[dict]) -> None:
    split = steps_splitter(config.max_steps)
    samples, dropped = state_examples(rows, session.tokenizer, split, config.max_seq_len)
    if not samples:
        raise ValueError(f"states_dir: none of {len(rows)} states has a step within max_seq_len={config.max_seq_len}")
    print(f"[cdra] {len(samples)} PRM examples from {len(rows)} states ({dropped} dropped: no step or too long)")
    stream = session.prompt_stream(samples)
    objective = Objective(kind="prm", epochs=1)
    examples = session.prepared.data.get("eval_data", []) if config.best_of else []
    evaluate = (lambda: evaluate_prm(session, config, examples)) if examples else None
    for step in session.steps(config.steps):
        batch = [dataclasses.replace(s, group_id=step * config.batch_size + i) for i, s in enumerate(stream.next(config.batch_size))]
        metrics = {"data/states_dropped": float(dropped)}
        metrics.update(session.learn(batch, objective, sync=False))  # the policy engines are frozen
        session.finish_step(metrics, evaluation=evaluate)


# ----------------------------------------------------------------------------- evaluation


def evaluate_prm(session: Session, config: TrainPRMConfig, examples: list[TaskExample]) -> dict[str, float]:
    """Serve the current PRM (written to ``<output_dir>/prm``) and measure it on ``best_of``
    policy samples per held-out question: step quality against ground truth, and best-of-N."""
    from cdra.runtime.prm_actor import between_steps_prm

    directory = Path(session.run.output_dir) / "prm"
    if directory.exists():
        shutil.rmtree(directory)
    session.learners.save_pretrained(str(directory), session.model_path)
    sampling = dataclasses.replace(config.sampling, seed=config.run.seed * 1_000_003 + 999_983)
    prompts = [session.encode(session.prompt(config.prompt_template, e)) for e in examples]
    groups = session.roles[POLICY_ROLE].generate(prompts, sampling, config.best_of)
    items = [ScoreItem(c.text, e.answer, metadata={"question": e.question, "id": e.id}, prompt_ids=c.prompt_ids,
                       response_ids=c.response_ids) for e, g in zip(examples, groups) for c in g]
    with between_steps_prm(str(directory), session.tokenizer, steps_splitter(config.max_steps), config.threshold_class,
                           config.prm_time_limit_s) as pool:
        judged = []
        for start in tqdm(range(0, len(items), 256), desc="prm eval", leave=False):
            judged += pool.score(items[start : start + 256])
    errors = sum(j.error is not None for j in judged)
    correct = [o.score > 0 for o in session.scorers.score(items)]
    metrics = step_quality(items, judged, session.tokenizer, steps_splitter(config.max_steps), examples, config.best_of)
    metrics.update(best_of_n(items, judged, correct, config, answer_extractor(config.verifier)))
    metrics["prm_eval/errors"] = float(errors)
    print("[cdra] PRM eval: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    return metrics


def step_quality(items: list[ScoreItem], judged, tokenizer, split, examples: list[TaskExample], n: int) -> dict[str, float]:
    """Every scored step against `step_truths` of the step texts the PRM read (decoded and split
    as `PRMPool.step_spans` does)."""
    scores: list[float] = []
    labels: list[bool] = []
    unlabelled = 0
    for index, (item, result) in enumerate(zip(items, judged)):
        problem = problem_from_question(examples[index // n].question)
        text, offsets = incremental_offsets(item.response_ids, lambda ids: tokenizer.decode(ids, skip_special_tokens=True))
        chars = list(split(text))
        truth = step_truths(problem, [text[a:b] for a, b in chars]) if problem is not None else None
        if truth is None or result.error or len(truth) != len(result.step_scores):
            unlabelled += 1
            continue
        scores += result.step_scores
        labels += truth
    out = {f"prm/{k}": v for k, v in judge_quality(scores, labels, threshold=0.5).items()}
    out["prm/unlabelled_responses"] = float(unlabelled)
    return out


def best_of_n(items: list[ScoreItem], judged, correct: list[bool], config: TrainPRMConfig, answer_of) -> dict[str, float]:
    """Accuracy of each pick among the same ``best_of`` samples per question."""
    n = config.best_of
    rng = random.Random(config.run.seed)
    picks: dict[str, list[bool]] = {"prm": [], **{f"prm_{how}": [] for how in SOLUTION_SCORES}, "majority": [], "random": [], "oracle": []}
    for q in range(len(items) // n):
        group = range(q * n, (q + 1) * n)
        right = [correct[i] for i in group]
        picks["prm"].append(right[pick_by_score([solution_score(judged[i].step_scores, config.solution_score) for i in group])])
        for how in SOLUTION_SCORES:  # every reduction on the same samples, for comparison
            picks[f"prm_{how}"].append(right[pick_by_score([solution_score(judged[i].step_scores, how) for i in group])])
        picks["majority"].append(right[pick_majority([answer_of(items[i].response) if answer_of else items[i].response for i in group])])
        picks["random"].append(right[pick_random(n, rng)])
        picks["oracle"].append(oracle_correct(right))
    out = {f"best_of_{n}/{name}": sum(v) / len(v) for name, v in picks.items()}
    out[f"best_of_{n}/single_sample"] = sum(correct) / len(correct)
    return out
