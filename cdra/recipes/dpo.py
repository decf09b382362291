"""LPR, step 3: DPO and step-DPO from PRM-ranked best-of-N (ALGORITHMS.md section 5).

Data: the synthesize output's states (`cdra.recipes.lpr_synthesize`), read from ``data_path``
(a states directory, or any run's ``experience.parquet`` for DPO), or, with no ``data_path``,
synthesized in-process on this run's engines before the first update (the embedded default).

- ``mode=dpo``: every full solution is scored by the served PRM (`PRMPool`, P(class >= 2) at each
  step end, reduced by `solution_score`), and pairs are built per question by
  `cdra.algos.preference_pairs.solution_text_pairs` (top 10 correct x up to 10 incorrect, plus
  correct pairs more than ``min_gap`` apart).
- ``mode=step_dpo``: each prefix state with a completion reaching gold and one not gives pairs
  that share exactly the prefix; the prefix joins the prompt, so the loss covers the
  continuations (from the first diverging step on) only.

The loss is DPO's sigmoid on summed response log-probs, beta 0.1, against the reference: the
SFT policy the learner starts from, whose log-probs are computed once before the first update
and stored with the pairs (``<output_dir>/pairs.pkl``), so a resumed run keeps the same pairs and
the same reference. Evaluation: held-out greedy accuracy and process accuracy, per question
(``eval/*.jsonl``, paired across runs by `python -m cdra.recipes.compare`).
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cdra.algos.experience import Sample
from cdra.algos.preference_pairs import TextPair, pair_sample, solution_text_pairs, step_text_pairs
from cdra.algos.prm_scores import SolutionScore, solution_score
from cdra.config import ConfigError, check
from cdra.data.loaders import DatasetSpec
from cdra.recipes.cdra import process_fields
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
from cdra.recipes.lpr_synthesize import STATES_DIR, SynthesisSettings, read_states, synthesize, write_states
from cdra.recipes.session import Session
from cdra.rewards.judging import steps_splitter
from cdra.runtime.learner import LearnerConfig
from cdra.runtime.objectives import Objective
from cdra.runtime.roles import Learners, PolicyEngines, RoleSpec, RuleVerifiers, plan
from cdra.runtime.rollout import EngineConfig, SamplingConfig
from cdra.runtime.scorer import ScoreItem

PAIRS_FILE = "pairs.pkl"
REFERENCE_CHUNK = 256  # pairs per reference log-prob call


@dataclass
class DPOConfig:
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="outputs/dpo", eval_every=5, use_wandb=False))
    mode: Literal["dpo", "step_dpo"] = field(default="dpo", metadata={"help": "dpo: PRM-ranked best-of-N full-solution pairs; step_dpo: pairs sharing a prefix state, loss on the diverging part"})
    model_path: str = field(default="", metadata={"help": "HF dir of the SFT policy (also the reference); empty: the zoo steps policy"})
    prm_path: str = field(default="", metadata={"help": "HF token-classification dir of the PRM (mode=dpo); empty: the zoo lpr_prm"})
    data_path: str = field(default="", metadata={"help": "a states dir (synthesize output, part-*.parquet) or an experience.parquet (mode=dpo); empty: synthesize in-process from train_data"})
    train_data: DatasetSpec = field(default_factory=lambda: synthetic_spec("train", 96))
    eval_data: DatasetSpec = field(default_factory=lambda: synthetic_spec("test", 200))
    synthesis: SynthesisSettings = field(default_factory=lambda: SynthesisSettings(num_solutions=8))
    solution_score: SolutionScore = field(default="product", metadata={"help": "step scores -> solution score: product, min, sum or last"})
    threshold_class: int = field(default=2, metadata={"help": "step score = P(class >= this) of the PRM"})
    top_correct: int = field(default=10, metadata={"help": "correct solutions per question that get pairs (ranked by PRM score)"})
    max_incorrect: int = field(default=10, metadata={"help": "incorrect solutions each of them is paired with (highest scored first)"})
    min_gap: float = field(default=0.4, metadata={"help": "correct-vs-correct pairs: PRM score gap above this"})
    max_pairs_per_prefix: int = field(default=2, metadata={"help": "step_dpo: pairs per prefix state"})
    max_steps: int = field(default=8, metadata={"help": "steps the PRM reads per solution (steps_splitter)"})
    prompt_template: str = "critique_rl_inference_short"
    verifier: str = "gsm8k"
    verifier_timeout_s: float = 10.0
    prm_time_limit_s: float = 300.0
    num_scorers: int = 1
    num_rollout_workers: int = 1
    rollout: EngineConfig = field(default_factory=lambda: EngineConfig(max_model_len=512))
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.7, max_tokens=64))
    # 20 steps lowered held-out accuracy in every seed while step 10 raised it (docs/results/lpr.md):
    # the chosen solutions often reach their right answer through a wrong step
    steps: int = 10
    batch_size: int = field(default=32, metadata={"help": "pairs per optimizer step"})
    beta: float = 0.1
    learner: LearnerConfig = field(default_factory=lambda: LearnerConfig(num_ranks=1, lr=1e-5, micro_batch_size=16, zero_stage=2))

    def validate(self) -> None:
        check_positive(self, "steps", "batch_size", "top_correct", "max_pairs_per_prefix", "max_steps", "verifier_timeout_s",
                       "prm_time_limit_s", "num_scorers", "num_rollout_workers", "beta")
        check(self.max_incorrect >= 0, f"max_incorrect must be >= 0, got {self.max_incorrect}")
        check(self.min_gap >= 0, f"min_gap must be >= 0, got {self.min_gap}")
        check(self.threshold_class >= 1, f"threshold_class must be >= 1, got {self.threshold_class}")
        check(self.learner.head == "lm", f"learner.head must be lm (DPO trains the policy), got {self.learner.head!r}")
        check(self.mode == "dpo" or not self.data_path.endswith(".parquet"),
              "mode=step_dpo needs prefix states (a synthesize output dir), not an experience.parquet")
        check_template(self.prompt_template, "prompt_template")
        check_engine(self.rollout, "rollout")
        check_sampling(self.sampling, "sampling")
        check_learner(self.learner, "learner")
        check_dataset(self.train_data, "train_data")
        check_dataset(self.eval_data, "eval_data")


def objective_of(config: DPOConfig) -> Objective:
    """Sigmoid DPO on summed response log-probs; the shared prefix is already in the prompt."""
    return Objective(kind="dpo", beta=config.beta, epochs=1)


def roles_of(config: DPOConfig) -> list[RoleSpec]:
    return [PolicyEngines(config.rollout, config.num_rollout_workers), Learners(config.learner),
            RuleVerifiers(config.verifier, config.num_scorers, config.verifier_timeout_s)]


def prepare(config: DPOConfig) -> Prepared:
    """Paths, PRM and data checked before any actor starts."""
    check_model_path(config.model_path, "model_path")
    check_model_path(config.prm_path, "prm_path")
    check_verifier(config.verifier, "verifier")
    if config.mode == "dpo":
        try:
            resolve_model(config.prm_path, "lpr_prm")
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"prm_path: {e}") from e
    if config.data_path:
        path = Path(config.data_path)
        check(path.exists(), f"data_path: {config.data_path!r} does not exist")
        if path.is_dir():
            try:
                read_states(path)
            except ValueError as e:
                raise ConfigError(f"data_path: {e}") from e
    own = Path(config.run.output_dir) / STATES_DIR
    check(config.data_path or config.run.resume or not own.exists(),
          f"{own} already holds states: run.resume=true continues that run, data_path={own} reads them, or choose another run.output_dir")
    data = {"eval_data": load_examples(config.eval_data, "eval_data")}
    if not config.data_path:
        data["train_data"] = load_examples(config.train_data, "train_data")
    return Prepared(data, plan(roles_of(config), gpu=True))


def run(config: DPOConfig, prepared: Prepared | None = None) -> dict[str, float]:
    session = Session.start(config.run, config, model_path=config.model_path, zoo_checkpoint="steps", roles=roles_of(config),
                            prepared=prepared or prepare(config))
    try:
        train(session, config)
    finally:
        summary = session.close()
    return summary


# ----------------------------------------------------------------------------- data -> pairs


def experience_rows(path: str, tokenizer) -> list[dict]:
    """Full-solution rows of a run's ``experience.parquet`` (`ReplayBuffer.export`): prompt and
    response decoded from the sample's ids, correct from ``metadata.correct`` (else reward > 0.5),
    solutions numbered per prompt."""
    from cdra.runtime.replay import load_export

    rows: list[dict] = []
    counts: dict[str, int] = {}
    for s in load_export(path):
        n = counts[s.prompt_id] = counts.get(s.prompt_id, -1) + 1
        correct = s.metadata.get("correct", s.reward)
        rows.append({"question_id": s.prompt_id, "solution_index": n, "kind": "full", "correct": float(correct) > 0.5,
                     "prompt": tokenizer.decode(s.prompt_ids, skip_special_tokens=True),
                     "response": tokenizer.decode(s.response_ids, skip_special_tokens=True)})
    return rows


def source_rows(session: Session, config: DPOConfig) -> list[dict]:
    """The run's states: read from ``data_path`` or synthesized now on the policy's engines
    (and written to ``<output_dir>/process_rewards``)."""
    if config.data_path.endswith(".parquet"):
        return experience_rows(config.data_path, session.tokenizer)
    if config.data_path:
        return read_states(config.data_path)
    own = Path(config.run.output_dir) / STATES_DIR
    if config.run.resume and own.exists():  # stopped before its first checkpoint: the states are made
        return read_states(own)
    examples = session.prepared.data["train_data"]
    print(f"[cdra] synthesizing states for {len(examples)} questions on the policy's engines")
    rows = synthesize(session, examples, config.synthesis, seed=config.run.seed * 1_000_003 + 7)
    write_states(rows, Path(config.run.output_dir) / STATES_DIR)  # another run (e.g. the other mode) can read them: data_path=
    return rows


def prm_scores(session: Session, config: DPOConfig, rows: list[dict]) -> dict[tuple[str, int], float]:
    """Solution score of every full-solution row under the served PRM."""
    from cdra.runtime.prm_actor import between_steps_prm

    items = [ScoreItem(r["response"], "", prompt_ids=session.encode(r["prompt"]), response_ids=session.encode(r["response"]))
             for r in rows]
    with between_steps_prm(resolve_model(config.prm_path, "lpr_prm"), session.tokenizer, steps_splitter(config.max_steps),
                           config.threshold_class, config.prm_time_limit_s) as pool:
        judged = pool.score(items)
    failed = [j.error for j in judged if j.error]
    if failed:
        raise RuntimeError(f"PRM failed on {len(failed)} of {len(items)} solutions: {failed[0]}")
    return {(r["question_id"], r["solution_index"]): solution_score(j.step_scores, config.solution_score) for r, j in zip(rows, judged)}


def text_pairs(session: Session, config: DPOConfig, rows: list[dict]) -> list[TextPair]:
    if config.mode == "step_dpo":
        return step_text_pairs(rows, config.max_pairs_per_prefix)
    full = [r for r in rows if r["kind"] == "full"]
    return solution_text_pairs(full, prm_scores(session, config, full), config.top_correct, config.max_incorrect, config.min_gap)


def build_pairs(session: Session, config: DPOConfig) -> tuple[list[Sample], dict[str, float]]:
    """The run's DPO samples with their reference log-probs (the learner before its first
    update is the SFT policy), and counts; stored in ``<output_dir>/pairs.pkl`` for a resume."""
    from cdra.algos.dpo import attach_reference_logprobs

    stored = Path(config.run.output_dir) / PAIRS_FILE
    if stored.exists() and session.step > 0:
        return pickle.loads(stored.read_bytes())
    rows = source_rows(session, config)
    pairs = text_pairs(session, config, rows)
    if not pairs:
        raise ValueError(f"no preference pairs from {len(rows)} states (mode={config.mode}): every question all right or all wrong?")
    samples = [pair_sample(session.encode(p.prompt), session.encode(p.prefix) if p.prefix else [], session.encode(p.chosen),
                           session.encode(p.rejected), session.eos_id, prompt_id=p.question_id, group_id=i)
               for i, p in enumerate(pairs)]
    for start in range(0, len(samples), REFERENCE_CHUNK):  # one learner call collates its samples into one batch
        attach_reference_logprobs(samples[start:start + REFERENCE_CHUNK], session.learners.logprobs)
    counts = {"pairs/total": float(len(pairs)), "pairs/questions": float(len({p.question_id for p in pairs})),
              **{f"pairs/{kind}": float(sum(p.kind == kind for p in pairs)) for kind in ("correct_vs_incorrect", "score_gap", "step")}}
    stored.write_bytes(pickle.dumps((samples, counts)))
    (Path(config.run.output_dir) / "pairs.jsonl").write_text("".join(json.dumps(dataclasses.asdict(p)) + "\n" for p in pairs))
    return samples, counts


# ----------------------------------------------------------------------------- the loop


def train(session: Session, config: DPOConfig) -> None:
    samples, counts = build_pairs(session, config)
    print("[cdra] " + ", ".join(f"{k} {v:g}" for k, v in counts.items()))
    session.final_metrics.update(counts)
    stream = session.prompt_stream(samples)
    objective = objective_of(config)
    evaluate = lambda: evaluate_process(session, config)  # noqa: E731
    if session.step == 0:
        evaluate()
    for _ in session.steps(config.steps):
        batch = stream.next(config.batch_size)
        metrics = session.learn(batch, objective, sync=False)  # the engines only generate to evaluate
        metrics.update(counts)
        session.finish_step(metrics, evaluation=evaluate)


def evaluate_process(session: Session, config: DPOConfig) -> dict[str, float]:
    """Held-out greedy answer accuracy and process accuracy, per question records."""
    return session.evaluate(session.prepared.data["eval_data"], config.prompt_template, config.sampling, record_fields=process_fields)
