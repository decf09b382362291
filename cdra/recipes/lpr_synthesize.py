"""LPR, step 1: process labels synthesized from completions (ALGORITHMS.md §5, Math-Shepherd).

Per question: N full solutions of the SFT policy -> for each, the prefixes from step
floor(0.2 * steps) on, each kept with a probability (`cdra.rewards.mc_labels`, seeded per
solution) -> K completions of each kept prefix, continuing the solution's own tokens -> value =
completions reaching the gold answer (0..K), a full solution K * correct -> hard and soft labels.
Every state is a row (`STATE_COLUMNS`) of a `datasets` parquet directory,
``<output_dir>/process_rewards/``, written one shard per chunk of finished questions: a stopped
run resumes (run.resume=true) with the questions no shard holds.

On the synthetic task each state is checked against the ground truth: a prefix is truly right
when every step through it is right (`step_truths`), a full solution when `process_correct`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cdra.config import check
from cdra.data.example import TaskExample
from cdra.data.loaders import DatasetSpec
from cdra.data.synthetic import problem_from_question, process_correct, step_truths
from cdra.recipes.common import (
    Prepared,
    RunConfig,
    check_dataset,
    check_engine,
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
from cdra.rewards.judging import incremental_offsets, steps_splitter, token_spans
from cdra.rewards.mc_labels import choose_prefixes, full_value, hard_label, label_agreement, mc_value, prefix_rng, soft_label
from cdra.runtime.roles import FrozenEngines, PolicyModel, RoleSpec, RuleVerifiers, plan, seeded
from cdra.runtime.rollout import Completion, EngineConfig, SamplingConfig
from cdra.runtime.scorer import ScoreItem

STATES_DIR = "process_rewards"
# the contract with train_prm and dpo: column -> arrow type of a state row
STATE_COLUMNS = {
    "question_id": "string", "prompt": "string", "gold": "string", "solution_index": "int64", "kind": "string",
    "step_index": "int64", "num_steps": "int64", "prefix": "string", "response": "string", "correct": "bool",
    "completions": "list<string>", "completion_correct": "list<bool>", "value": "int64", "hard_label": "int64",
    "soft_label": "float64", "policy_version": "int64", "k": "int64", "seed": "int64",
}
# written as well, not required of a reader's rows: the raw question (ground truth on the synthetic task)
EXTRA_COLUMNS = {"question": "string"}
SOFT_RIGHT = 0.5  # a soft label >= this counts as "right"; at K 3: two completions of three, P(class >= 2)


@dataclass
class SynthesisSettings:
    num_solutions: int = field(default=10, metadata={"help": "N full solutions per question"})
    num_completions: int = field(default=3, metadata={"help": "K completions per kept prefix"})
    keep_probability: float = field(default=0.4, metadata={"help": "each prefix from step floor(min_step_fraction * steps) on is kept with this probability"})
    min_step_fraction: float = field(default=0.2, metadata={"help": "prefixes start at floor(this * steps) steps (at least 1)"})
    max_steps: int = field(default=8, metadata={"help": "steps of a solution: its first consecutive 'Step N:' markers (steps_splitter)"})
    prompt_template: str = "critique_rl_inference_short"
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.7, max_tokens=64, logprobs=False))

    def validate(self) -> None:
        check_positive(self, "num_solutions", "num_completions", "max_steps")
        check(0 < self.keep_probability <= 1, f"synthesis.keep_probability must be in (0, 1], got {self.keep_probability}")
        check(0 <= self.min_step_fraction < 1, f"synthesis.min_step_fraction must be in [0, 1), got {self.min_step_fraction}")
        check(self.sampling.temperature > 0, "synthesis.sampling.temperature must be > 0 (N and K samples at T 0 repeat one answer)")
        check_template(self.prompt_template, "synthesis.prompt_template")
        check_sampling(self.sampling, "synthesis.sampling")


@dataclass
class SynthesizeConfig:
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="outputs/synthesize_process_rewards", use_wandb=False))
    model_path: str = field(default="", metadata={"help": "HF dir of the SFT policy; empty: the zoo steps policy (cdra.models.zoo)"})
    train_data: DatasetSpec = field(default_factory=lambda: synthetic_spec("train", 256))
    synthesis: SynthesisSettings = field(default_factory=SynthesisSettings)
    chunk_questions: int = field(default=32, metadata={"help": "questions per shard; run.stop_after counts shards (a stop loses at most the chunk in flight)"})
    verifier: str = field(default="gsm8k", metadata={"help": "answer checker of solutions and completions"})
    verifier_timeout_s: float = 10.0
    num_scorers: int = 1
    num_rollout_workers: int = 1
    rollout: EngineConfig = field(default_factory=lambda: EngineConfig(max_model_len=512))

    def validate(self) -> None:
        check_positive(self, "chunk_questions", "verifier_timeout_s", "num_scorers", "num_rollout_workers")
        check_engine(self.rollout, "rollout")
        check_dataset(self.train_data, "train_data")


# ----------------------------------------------------------------------------- synthesis


def synthesize(session: Session, examples: list[TaskExample], settings: SynthesisSettings, seed: int,
               on_question_done: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """The labelled states of `examples` (rows with `STATE_COLUMNS` and `EXTRA_COLUMNS`), in
    two engine calls: every solution, then every kept prefix's completions. Uses the session's
    policy engines (`rollouts`), answer checker (`scorers`), tokenizer and policy version.
    `on_question_done` gets each question's rows, complete, in question order."""
    k = settings.num_completions
    split = steps_splitter(settings.max_steps)
    sampling = dataclasses.replace(settings.sampling, seed=seed)
    prompts = [session.prompt(settings.prompt_template, e) for e in examples]
    groups = session.rollouts.generate([session.encode(p) for p in prompts], sampling, settings.num_solutions)
    solutions = [(e, p, i, c) for e, p, g in zip(examples, prompts, groups) for i, c in enumerate(g)]
    correct = _checked(session, [(c.text, e.answer) for e, _, _, c in solutions])
    cuts = [(n, steps, end) for n, (e, _, i, c) in enumerate(solutions) for steps, end in _kept_cuts(session, c, split, settings, seed, e.id, i)]
    continued = session.rollouts.generate([solutions[n][3].prompt_ids + solutions[n][3].response_ids[:end] for n, _, end in cuts],
                                          sampling, k) if cuts else []
    prefixes = [session.tokenizer.decode(solutions[n][3].response_ids[:end], skip_special_tokens=True) for n, _, end in cuts]
    marks = _checked(session, [(text + c.text, solutions[n][0].answer) for (n, _, _), text, g in zip(cuts, prefixes, continued) for c in g])
    rows: dict[str, list[dict]] = {e.id: [] for e in examples}
    for (e, p, i, c), ok in zip(solutions, correct):
        num_steps = len(split(c.text))
        rows[e.id].append(_row(e, p, i, "full", num_steps, num_steps, c, c.text, ok, [], [], full_value(ok, k), k, seed, session))
    for j, ((n, steps, _), text, g) in enumerate(zip(cuts, prefixes, continued)):
        e, p, i, c = solutions[n]
        done = marks[j * k:(j + 1) * k]
        rows[e.id].append(_row(e, p, i, "prefix", steps, len(split(c.text)), c, text, correct[n], [x.text for x in g], done,
                               mc_value(done), k, seed, session))
    out: list[dict] = []
    for e in examples:
        ordered = sorted(rows[e.id], key=lambda r: (r["solution_index"], r["kind"] == "full", r["step_index"]))
        if on_question_done is not None:
            on_question_done(ordered)
        out += ordered
    return out


def _checked(session: Session, pairs: list[tuple[str, str]]) -> list[bool]:
    """The answer checker's verdict on each (response, gold); a failed check counts as wrong."""
    return [r.score > 0.5 for r in session.scorers.score([ScoreItem(text, gold) for text, gold in pairs])] if pairs else []


def _kept_cuts(session: Session, c: Completion, split: Callable[[str], list[tuple[int, int]]], settings: SynthesisSettings,
               seed: int, question_id: str, solution_index: int) -> list[tuple[int, int]]:
    """(steps in the prefix, its length in response tokens) of each kept prefix of a solution.
    Cut at a token of the policy's own response (the token holding the step's last
    character), so completions continue exactly the tokens it wrote."""
    spans = split(c.text)
    kept = choose_prefixes(len(spans), settings.keep_probability, settings.min_step_fraction, prefix_rng(seed, question_id, solution_index))
    if not kept:
        return []
    _, offsets = incremental_offsets(c.response_ids, lambda ids: session.tokenizer.decode(ids, skip_special_tokens=True))
    ends = [end for _, end in token_spans(offsets, spans)]
    return [(i, ends[i - 1]) for i in kept if ends[i - 1] > 0]


def _row(e: TaskExample, prompt: str, solution_index: int, kind: str, step_index: int, num_steps: int, c: Completion, prefix: str,
         correct: bool, completions: list[str], completion_correct: list[bool], value: int, k: int, seed: int, session: Session) -> dict:
    return {"question_id": e.id, "question": e.question, "prompt": prompt, "gold": e.answer, "solution_index": solution_index,
            "kind": kind, "step_index": step_index, "num_steps": num_steps, "prefix": prefix, "response": c.text,
            "correct": bool(correct), "completions": completions, "completion_correct": [bool(x) for x in completion_correct],
            "value": value, "hard_label": hard_label(value), "soft_label": soft_label(value, k),
            "policy_version": int(c.policy_version if c.policy_version is not None else session.version), "k": k, "seed": seed}


# ----------------------------------------------------------------------------- storage


def _features(columns: dict[str, str]) -> Any:
    from datasets import Features, Sequence, Value

    return Features({name: Sequence(Value(kind[5:-1])) if kind.startswith("list<") else Value(kind) for name, kind in columns.items()})


def write_states(rows: list[dict], directory: str | Path) -> Path:
    """`rows` as the next parquet shard ``part-NNNNN.parquet`` of `directory` (a `datasets`
    parquet directory: ``datasets.load_dataset("parquet", data_dir=directory)`` reads it).
    Written under a temporary name and renamed, so a killed run leaves whole shards only."""
    from datasets import Dataset

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    columns = {**STATE_COLUMNS, **{c: t for c, t in EXTRA_COLUMNS.items() if all(c in r for r in rows)}}
    path = directory / f"part-{len(_shards(directory)):05d}.parquet"
    tmp = directory / f".{path.name}.tmp"
    Dataset.from_list([{c: r[c] for c in columns} for r in rows], features=_features(columns)).to_parquet(str(tmp))
    os.replace(tmp, path)
    return path


def _shards(directory: Path) -> list[Path]:
    return sorted(directory.glob("part-*.parquet"))


def read_states(directory: str | Path) -> list[dict]:
    """Every row of the shards of `directory`, in shard order. No shard, or a shard lacking a
    `STATE_COLUMNS` column, is a one-line ValueError naming it."""
    import pyarrow.parquet as pq

    directory = Path(directory)
    shards = _shards(directory)
    if not shards:
        raise ValueError(f"{directory}: no process-reward shards (part-*.parquet); run jobs/synthesize_process_rewards.py first")
    rows: list[dict] = []
    for shard in shards:
        table = pq.read_table(shard)
        missing = [c for c in STATE_COLUMNS if c not in table.column_names]
        if missing:
            raise ValueError(f"{shard}: not a process-reward shard, missing columns {missing}")
        rows += table.to_pylist()
    return rows


# ----------------------------------------------------------------------------- metrics


def true_state(row: dict, max_steps: int) -> bool | None:
    """Ground truth of a state on the synthetic task: a prefix is right when every step
    through `step_index` is right (`step_truths` of its steps as written), a full solution when
    `process_correct`. None off the synthetic task or when a step holds no single a op b = c."""
    problem = problem_from_question(row.get("question", ""))
    if problem is None:
        return None
    if row["kind"] == "full":
        return process_correct(problem, row["response"])
    text = row["prefix"]
    truths = step_truths(problem, [text[s:e] for s, e in steps_splitter(max_steps)(text)])
    return None if truths is None or len(truths) != row["step_index"] else all(truths)


def label_quality(rows: list[dict], max_steps: int) -> dict[str, float]:
    """The MC labels against the ground truth (`label_agreement`: hard value > 0, soft value /
    K >= 0.5 mean "right"), over prefix states and over all states (full solutions too)."""
    known = [(r, t) for r in rows for t in [true_state(r, max_steps)] if t is not None]
    out = {"labels/unknown_truth_states": float(len(rows) - len(known))}
    for scope, pairs in (("prefix", [(r, t) for r, t in known if r["kind"] == "prefix"]), ("all", known)):
        stats = label_agreement([r["value"] for r, _ in pairs], [r["k"] for r, _ in pairs], [t for _, t in pairs], SOFT_RIGHT)
        out.update({f"labels/{scope}_{name}": v for name, v in stats.items()})
        out[f"labels/{scope}_states"] = float(len(pairs))
    return out


def synthesis_counts(rows: list[dict]) -> dict[str, float]:
    full = [r for r in rows if r["kind"] == "full"]
    prefixes = [r for r in rows if r["kind"] == "prefix"]
    return {"synthesis/questions": float(len({r["question_id"] for r in rows})), "synthesis/solutions": float(len(full)),
            "synthesis/solution_accuracy": sum(r["correct"] for r in full) / max(1, len(full)),
            "synthesis/prefix_states": float(len(prefixes)), "synthesis/states": float(len(rows)),
            "synthesis/completions": float(sum(len(r["completions"]) for r in prefixes)),
            "synthesis/prefix_value_mean": sum(r["value"] for r in prefixes) / max(1, len(prefixes)),
            "synthesis/prefix_hard_right": sum(r["hard_label"] for r in prefixes) / max(1, len(prefixes))}


# ----------------------------------------------------------------------------- the job


def roles_of(config: SynthesizeConfig) -> list[RoleSpec]:
    """The SFT policy on frozen engines (nothing trains, nothing syncs) under the rollout
    pool's name, seeded with the run's seed as synced engines are, and the answer checker."""
    model = resolve_model(config.model_path, "steps")
    engine = seeded(config.rollout, PolicyModel(model, pad_id=0, seed=config.run.seed))
    return [FrozenEngines("rollout", model, engine, config.num_rollout_workers),
            RuleVerifiers(config.verifier, config.num_scorers, config.verifier_timeout_s)]


def prepare(config: SynthesizeConfig) -> Prepared:
    """Everything checked and loaded before any actor starts, including what a resume finds."""
    check_model_path(config.model_path, "model_path")
    check_verifier(config.verifier, "verifier")
    states = Path(config.run.output_dir) / STATES_DIR
    if _shards(states) and not config.run.resume:
        raise ValueError(f"{states} already holds shards: run.resume=true continues that run, or choose another run.output_dir")
    return Prepared({"train_data": load_examples(config.train_data, "train_data")}, plan(roles_of(config), gpu=True))


def run(config: SynthesizeConfig, prepared: Prepared | None = None) -> dict[str, float]:
    """Synthesize the states of every training question no shard holds; returns the summary
    (counts, and label agreement over all shards)."""
    prepared = prepared or prepare(config)
    examples = prepared.data["train_data"]
    states = Path(config.run.output_dir) / STATES_DIR
    rows = read_states(states) if _shards(states) else []
    finished = {r["question_id"] for r in rows}
    todo = [e for e in examples if e.id not in finished]
    chunks = [todo[i:i + config.chunk_questions] for i in range(0, len(todo), config.chunk_questions)]
    if config.run.stop_after is not None:  # as if interrupted once that many shards exist
        chunks = chunks[:max(0, config.run.stop_after - len(_shards(states)))]
    if finished:
        print(f"[cdra] resuming: {len(finished)} questions in {len(_shards(states))} shards, {len(todo)} to go")
    # resume here means the shards; the session's own resume looks for learner checkpoints, and there is no learner
    session = Session.start(dataclasses.replace(config.run, resume=False), config, model_path=config.model_path,
                            zoo_checkpoint="steps", roles=roles_of(config), prepared=prepared)
    try:
        bar = tqdm(total=len(examples), initial=len(finished), desc="questions", dynamic_ncols=True)
        for chunk in chunks:
            # one sampling seed per shard: a resumed run draws the next shard's as the whole run would
            seed = config.run.seed * 1_000_003 + len(_shards(states))
            new = synthesize(session, chunk, config.synthesis, seed, on_question_done=lambda _: bar.update(1))
            write_states(new, states)
            rows += new
        bar.close()
        session.final_metrics.update(summarize(rows, config, len(examples)))
        print("[cdra] " + ", ".join(f"{k} {v:.3f}" for k, v in session.final_metrics.items() if k.startswith(("labels/", "synthesis/"))))
    finally:
        summary = session.close()
    return summary


def summarize(rows: list[dict], config: SynthesizeConfig, num_questions: int) -> dict[str, float]:
    done = len({r["question_id"] for r in rows})
    return {**synthesis_counts(rows), **label_quality(rows, config.synthesis.max_steps), "synthesis/complete": float(done == num_questions)}
