"""Critique-and-refine evaluation (ALGORITHMS.md section 2) and pass@k.

For every question the frozen actor writes a first attempt y0 (greedy), the critic critiques it
(greedy), and the actor refines given (x, y0, critique) (greedy); with `rounds > 1` the newest
response is critiqued and refined again. Metrics, as fractions of all examples:

- ``acc0`` first-attempt accuracy, ``acc`` accuracy after the last refinement, ``delta`` =
  acc - acc0, ``delta_c_to_i`` / ``delta_i_to_c`` the share of examples that went from correct
  to incorrect / incorrect to correct, ``acc_round{r}`` after each round when rounds > 1;
- ``acc_dis`` over the critiques with a parseable final verdict (first round), and the same over
  originally correct (``acc_dis_correct``) and incorrect (``acc_dis_incorrect``) attempts;
  ``verdict_rate`` is the parseable share, ``acc_dis_all`` counts unparseable as wrong;
  ``acc_dis_balanced`` is the mean of the two splits: 50 % for a critic that always says
  "Correct" (or always "Wrong"), whatever share of the attempts is correct, which plain
  ``acc_dis`` is not (an always-"Correct" critic scores acc0 there);
- ``pass@k`` of plain generation from ``pass_samples`` samples at ``pass_temperature``
  (unbiased estimator, Chen et al. 2021).
- with a ``baseline`` (an earlier evaluation's samples) ``paired/*``: accuracy after refinement
  of both on the questions they share, the questions each got right alone (``gained``,
  ``lost``) and a one-sided sign test, the way to tell two critics apart on a small test set.

`evaluate_critique` is the loop, used by the Critique-RL recipe before and after training and
by `run` (`jobs/evaluate.py`), which starts its own engines: one pool for the actor and one for
the critic, no learner.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import ray

from cdra.config import check, save_config
from cdra.data.chat import CHAT_TEMPLATES, format_chat
from cdra.data.example import TaskExample
from cdra.data.loaders import DatasetSpec
from cdra.data.prompts import render_prompt
from cdra.recipes.common import (
    Prepared,
    check_dataset,
    check_engine,
    check_model_path,
    check_positive,
    check_verifier,
    load_examples,
    synthetic_spec,
)
from cdra.rewards import parse_final_verdict
from cdra.runtime.cluster import Placement, RoleResources, init_ray, on_gpu_cluster
from cdra.runtime.groups import RolloutPool
from cdra.runtime.rollout import Completion, EngineConfig, SamplingConfig
from cdra.runtime.scorer import ScoreItem, ScorerPool

Role = Literal["inference", "critique", "refine"]
Grader = Callable[[list[str], list[str]], list[bool]]

# the verifier that grades each dataset format's answers
VERIFIER_OF_FORMAT = {"synthetic": "gsm8k", "gsm8k": "gsm8k", "math": "math", "aqua": "aqua", "synthetic_mcq": "mcq"}


def resolve_verifier_name(verifier: str, spec: DatasetSpec) -> str:
    """`auto`: the verifier of the dataset's format (a table dataset: of its `kind`)."""
    if verifier != "auto":
        return verifier
    return VERIFIER_OF_FORMAT.get(spec.format, spec.kind)


# ----------------------------------------------------------------------------- prompts


@dataclass
class PromptConfig:
    chat_template: str = field(default="none", metadata={"help": "none: plain templates; auto: the tokenizer's own chat template (else chatml); or chatml, llama2, llama3, default"})
    style: Literal["auto", "short", "long"] = field(default="auto", metadata={"help": "critique_rl_*_short or long templates; auto: short when chat_template is none"})
    system_prompt: str = ""

    def validate(self) -> None:
        check(self.chat_template in CHAT_TEMPLATES, f"chat_template must be one of {list(CHAT_TEMPLATES)}, got {self.chat_template!r}")

    def template(self, role: Role) -> str:
        short = self.style == "short" or (self.style == "auto" and self.chat_template == "none")
        return f"critique_rl_{role}" + ("_short" if short else "")


class PromptFormatter:
    """Renders a role's template (optionally inside a chat turn) and encodes it with one model's tokenizer."""

    def __init__(self, tokenizer: Any, config: PromptConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config

    def text(self, role: Role, **fields: str) -> str:
        body = render_prompt(self.config.template(role), **fields)
        if self.config.chat_template == "none":
            return body
        messages = ([{"role": "system", "content": self.config.system_prompt}] if self.config.system_prompt else []) + [{"role": "user", "content": body}]
        return format_chat(messages, self.tokenizer, self.config.chat_template)

    def encode(self, role: Role, **fields: str) -> list[int]:
        # chat templates write their own BOS; plain templates match how the tiny models were trained
        return self.tokenizer(self.text(role, **fields), add_special_tokens=False).input_ids


@dataclass
class Speaker:
    """A model as the driver sees it: its engines and how to prompt them."""

    pool: RolloutPool
    prompts: PromptFormatter

    def generate(self, role: Role, fields: list[dict[str, str]], sampling: SamplingConfig, n: int = 1) -> list[list[Completion]]:
        return self.pool.generate([self.prompts.encode(role, **f) for f in fields], sampling, n)


def attempt_fields(example: TaskExample) -> dict[str, str]:
    return {"question": example.question}


def critique_fields(example: TaskExample, response: str) -> dict[str, str]:
    # generations start with a space after "A:"/"Critique:"; the templates supply their own
    return {"question": example.question, "response": response.strip()}


def refine_fields(example: TaskExample, response: str, critique: str) -> dict[str, str]:
    return {"question": example.question, "response": response.strip(), "critique": critique.strip()}


def oracle(scorers: ScorerPool) -> Grader:
    """r(x, y) in {0, 1}: the answer checker run on the scorer actors."""

    def grade(responses: list[str], golds: list[str]) -> list[bool]:
        results = scorers.score([ScoreItem(r, g) for r, g in zip(responses, golds)])
        return [r.score > 0.5 for r in results]

    return grade


# ----------------------------------------------------------------------------- metrics (pure)


def refinement_metrics(original: list[bool], refined: list[bool]) -> dict[str, float]:
    """acc0, acc, delta and the c->i / i->c transition rates over all examples."""
    if len(original) != len(refined) or not original:
        raise ValueError(f"refinement_metrics: need equal, non-empty lists, got {len(original)} and {len(refined)}")
    n = len(original)
    acc0, acc = sum(original) / n, sum(refined) / n
    return {
        "acc0": acc0, "acc": acc, "delta": acc - acc0,
        "delta_c_to_i": sum(o and not r for o, r in zip(original, refined)) / n,
        "delta_i_to_c": sum(r and not o for o, r in zip(original, refined)) / n,
    }


def _rate(pairs: list[tuple[bool | None, bool]]) -> float:
    """Share of parseable verdicts that match the oracle (nan when none is parseable)."""
    judged = [v == c for v, c in pairs if v is not None]
    return sum(judged) / len(judged) if judged else float("nan")


def discrimination_metrics(verdicts: list[bool | None], original: list[bool]) -> dict[str, float]:
    """Acc@Dis over parseable verdicts, split by whether the judged response was correct."""
    if len(verdicts) != len(original) or not verdicts:
        raise ValueError(f"discrimination_metrics: need equal, non-empty lists, got {len(verdicts)} and {len(original)}")
    pairs = list(zip(verdicts, original))
    on_correct, on_incorrect = _rate([p for p in pairs if p[1]]), _rate([p for p in pairs if not p[1]])
    return {
        "acc_dis": _rate(pairs),
        "acc_dis_correct": on_correct,
        "acc_dis_incorrect": on_incorrect,
        "acc_dis_balanced": (on_correct + on_incorrect) / 2,  # nan when either split is empty
        "acc_dis_all": sum(v is not None and v == c for v, c in pairs) / len(pairs),
        "verdict_rate": sum(v is not None for v in verdicts) / len(verdicts),
    }


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def sign_test_p(gained: int, lost: int) -> float:
    """One-sided exact sign test: P(at least `gained` of the `gained + lost` changed questions
    went up) if up and down were equally likely. 1.0 when nothing changed."""
    if gained < 0 or lost < 0:
        raise ValueError(f"sign_test_p needs counts >= 0, got gained={gained} lost={lost}")
    n = gained + lost
    return sum(math.comb(n, k) for k in range(gained, n + 1)) / 2**n


def paired_comparison(baseline: dict[str, bool], current: dict[str, bool]) -> dict[str, float]:
    """Accuracy after refinement on the questions both evaluations share, and how many of them
    each one got right alone (per question, so two critics are compared on equal ground)."""
    shared = sorted(baseline.keys() & current.keys())
    if not shared:
        raise ValueError("paired comparison: the baseline evaluation shares no question with this one")
    gained = sum(current[q] and not baseline[q] for q in shared)
    lost = sum(baseline[q] and not current[q] for q in shared)
    return {
        "paired/n": float(len(shared)),
        "paired/acc_baseline": sum(baseline[q] for q in shared) / len(shared),
        "paired/acc": sum(current[q] for q in shared) / len(shared),
        "paired/gained": float(gained),
        "paired/lost": float(lost),
        "paired/sign_p": sign_test_p(gained, lost),
    }


def final_correct_by_question(records: list[dict[str, Any]]) -> dict[str, bool]:
    """Question -> whether the last refinement was right; a repeated question counts once (its
    first record), as the synthetic test split repeats questions once it runs out of them."""
    out: dict[str, bool] = {}
    for rec in records:
        out.setdefault(rec["question"], bool(rec["rounds"][-1]["correct"]))
    return out


def read_eval_samples(path: str | Path) -> list[dict[str, Any]]:
    """The records of an evaluation: its `eval_samples.jsonl`, or the output_dir holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / "eval_samples.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"baseline evaluation {str(path)!r} not found (an evaluate output_dir or its eval_samples.jsonl)")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            rec = json.loads(line)
        except ValueError as err:
            raise ValueError(f"{path}:{number}: not JSON ({err})") from None
        if not (isinstance(rec, dict) and "question" in rec and rec.get("rounds") and "correct" in rec["rounds"][-1]):
            raise ValueError(f"{path}:{number}: not an evaluation record (needs 'question' and 'rounds' ending with 'correct')")
        records.append(rec)
    return records


def format_paired(metrics: dict[str, float]) -> str:
    return (f"paired with the baseline over {int(metrics['paired/n'])} shared questions: accuracy after refinement "
            f"{100 * metrics['paired/acc_baseline']:.1f} % -> {100 * metrics['paired/acc']:.1f} %, "
            f"{int(metrics['paired/gained'])} gained, {int(metrics['paired/lost'])} lost, "
            f"one-sided sign test p = {metrics['paired/sign_p']:.3g}")


# ----------------------------------------------------------------------------- the evaluation


@dataclass
class CritiqueEvalConfig:
    rounds: int = field(default=1, metadata={"help": "critique-refine rounds after the first attempt"})
    attempt_max_tokens: int = 96
    critique_max_tokens: int = 448
    refine_max_tokens: int = 96
    pass_samples: int = field(default=0, metadata={"help": "samples per question for pass@k (0: skip)"})
    pass_k: list[int] = field(default_factory=lambda: [1, 4])
    pass_temperature: float = 0.8

    def validate(self) -> None:
        check(self.rounds >= 1, "eval.rounds must be >= 1")
        check(all(t >= 1 for t in (self.attempt_max_tokens, self.critique_max_tokens, self.refine_max_tokens)), "eval max tokens must be >= 1")
        check(self.pass_samples == 0 or all(1 <= k <= self.pass_samples for k in self.pass_k), "every eval.pass_k must be in [1, pass_samples]")
        check(self.pass_samples == 0 or 0.0 < self.pass_temperature <= 2.0, "eval.pass_temperature must be in (0, 2]")


def greedy(max_tokens: int, stop: list[str] | None = None) -> SamplingConfig:
    return SamplingConfig(temperature=0.0, max_tokens=max_tokens, stop=list(stop or []), logprobs=False)


@dataclass
class EvalReport:
    metrics: dict[str, float]
    records: list[dict[str, Any]]


def evaluate_critique(actor: Speaker, critic: Speaker, grade: Grader, examples: list[TaskExample], config: CritiqueEvalConfig,
                      tag: str = "eval", seed: int = 0) -> EvalReport:
    """First attempt -> critique -> refinement (x rounds), all greedy, plus optional pass@k."""
    if not examples:
        raise ValueError("evaluate_critique: no examples")
    golds = [e.answer for e in examples]
    attempts = [g[0].text for g in actor.generate("inference", [attempt_fields(e) for e in examples], greedy(config.attempt_max_tokens))]
    correct0 = grade(attempts, golds)
    current, correct = attempts, correct0
    records = [{"id": e.id, "question": e.question, "answer": e.answer, "attempt": a, "correct0": c} for e, a, c in zip(examples, attempts, correct0)]
    metrics: dict[str, float] = {}
    for round_index in range(1, config.rounds + 1):
        critiques = [g[0].text for g in critic.generate("critique", [critique_fields(e, y) for e, y in zip(examples, current)], greedy(config.critique_max_tokens))]
        verdicts = [parse_final_verdict(c) for c in critiques]
        refined = [g[0].text for g in actor.generate("refine", [refine_fields(e, y, c) for e, y, c in zip(examples, current, critiques)], greedy(config.refine_max_tokens))]
        refined_correct = grade(refined, golds)
        if round_index == 1:
            metrics.update(discrimination_metrics(verdicts, correct0))
        if config.rounds > 1:
            metrics[f"acc_round{round_index}"] = sum(refined_correct) / len(refined_correct)
        for rec, c, v, y, ok in zip(records, critiques, verdicts, refined, refined_correct):
            rec.setdefault("rounds", []).append({"critique": c, "verdict": v, "refined": y, "correct": ok})
        current, correct = refined, refined_correct
    metrics.update(refinement_metrics(correct0, correct))
    if config.pass_samples:
        sampling = SamplingConfig(temperature=config.pass_temperature, max_tokens=config.attempt_max_tokens, logprobs=False, seed=seed)
        groups = actor.generate("inference", [attempt_fields(e) for e in examples], sampling, n=config.pass_samples)
        flat = grade([c.text for g in groups for c in g], [e.answer for e in examples for _ in range(config.pass_samples)])
        counts = [sum(flat[i * config.pass_samples : (i + 1) * config.pass_samples]) for i in range(len(examples))]
        for k in config.pass_k:
            metrics[f"pass@{k}"] = sum(pass_at_k(config.pass_samples, c, k) for c in counts) / len(counts)
    return EvalReport({f"{tag}/{k}": v for k, v in metrics.items()}, records)


# ----------------------------------------------------------------------------- reporting


TABLE_ROWS = ("acc0", "acc", "delta", "delta_c_to_i", "delta_i_to_c", "acc_dis", "acc_dis_balanced", "acc_dis_correct", "acc_dis_incorrect", "verdict_rate")


def _table_keys(columns: dict[str, dict[str, float]], tag: str) -> list[str]:
    """The fixed rows present in any column, then per-round accuracies and pass@k."""
    present = {k.split("/", 1)[1] for c in columns.values() for k in c if k.startswith(f"{tag}/")}
    extra = sorted(k for k in present if k.startswith(("acc_round", "pass@")))
    return [k for k in TABLE_ROWS if k in present] + extra


def format_table(columns: dict[str, dict[str, float]], tag: str = "eval") -> str:
    """Metrics as rows, one column per named result (e.g. before / after), in percent."""
    keys = _table_keys(columns, tag)
    width = max([len(k) for k in keys] + [6])
    widths = [max(12, len(name) + 2) for name in columns]  # a long column name keeps a gap
    lines = [" " * width + "".join(f"{name:>{w}}" for name, w in zip(columns, widths))]
    for k in keys:
        cells = [columns[name].get(f"{tag}/{k}") for name in columns]
        lines.append(f"{k:<{width}}" + "".join(
            f"{100 * v:>{w - 1}.2f}%" if v is not None and not math.isnan(v) else f"{'-':>{w}}" for v, w in zip(cells, widths)))
    return "\n".join(lines)


def plot_metrics(columns: dict[str, dict[str, float]], path: str | Path, tag: str = "eval", title: str = "") -> Path:
    """Grouped bar chart (percent) of the table's metrics; Agg canvas, no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = _table_keys(columns, tag)
    fig = Figure(figsize=(max(6, 0.9 * len(keys)), 3.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / max(1, len(columns))
    for i, (name, values) in enumerate(columns.items()):
        heights = [100 * values.get(f"{tag}/{k}", float("nan")) for k in keys]
        ax.bar([j + i * width for j in range(len(keys))], heights, width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))], keys, rotation=30, ha="right")
    ax.set_ylabel("%")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


# ----------------------------------------------------------------------------- standalone job


class FrozenEngines:
    """Rollout engines that never receive weights (the frozen actor, a critic under evaluation),
    in their own placement group so they land on GPUs like any other engine."""

    def __init__(self, model_path: str, engine: EngineConfig, num_workers: int, strategy: str = "PACK") -> None:
        self.placement = Placement({"rollout": RoleResources(num_workers, 1.0, engine.gpus_per_engine(on_gpu_cluster()))}, strategy=strategy)
        options = [self.placement.options("rollout", i) for i in range(num_workers)]
        self.pool = RolloutPool(dataclasses.replace(engine, model_path=model_path), num_workers, options)

    def close(self) -> None:
        for worker in self.pool.workers:
            ray.kill(worker)
        self.placement.release()


def speaker(model_path: str, engine: EngineConfig, num_workers: int, prompts: PromptConfig) -> tuple[Speaker, FrozenEngines]:
    from transformers import AutoTokenizer

    engines = FrozenEngines(model_path, engine, num_workers)
    return Speaker(engines.pool, PromptFormatter(AutoTokenizer.from_pretrained(model_path), prompts)), engines


@dataclass
class EvaluateConfig:
    output_dir: str = "outputs/evaluate"
    seed: int = 0
    ray_address: str | None = None
    actor_path: str = field(default="", metadata={"help": "HF model dir of the actor; empty: the zoo refiner (cdra.models.zoo)"})
    critic_path: str = field(default="", metadata={"help": "HF model dir of the critic (e.g. a critique_rl final_model); empty: the zoo critic (cdra.models.zoo)"})
    data: DatasetSpec = field(default_factory=lambda: synthetic_spec("test", 128))
    verifier: str = field(default="auto", metadata={"help": "auto: from the dataset format (gsm8k, math, aqua, mcq)"})
    num_scorers: int = 1
    verifier_timeout_s: float = 10.0
    prompts: PromptConfig = field(default_factory=PromptConfig)
    eval: CritiqueEvalConfig = field(default_factory=lambda: CritiqueEvalConfig(pass_samples=8, pass_k=[1, 4, 8]))
    actor_engine: EngineConfig = field(default_factory=lambda: EngineConfig(max_model_len=1024))
    critic_engine: EngineConfig = field(default_factory=lambda: EngineConfig(max_model_len=1024))
    num_actor_workers: int = 1
    num_critic_workers: int = 1
    baseline: str = field(default="", metadata={"help": "an earlier evaluation (its output_dir or eval_samples.jsonl), e.g. of the Stage I snapshot: adds gained / lost questions and a sign test over the questions both share"})

    def validate(self) -> None:
        check(bool(self.output_dir), "output_dir must not be empty")
        check_positive(self, "num_actor_workers", "num_critic_workers", "num_scorers", "verifier_timeout_s")
        check_engine(self.actor_engine, "actor_engine")
        check_engine(self.critic_engine, "critic_engine")
        check_dataset(self.data, "data")


@dataclass
class EvaluatePlan:
    """What `run` checked and loaded before starting Ray."""

    prepared: Prepared
    baseline: dict[str, bool] | None

    def describe(self) -> str:
        return self.prepared.describe() + (f"\nbaseline: {len(self.baseline)} questions" if self.baseline is not None else "")


def prepare(config: EvaluateConfig) -> EvaluatePlan:
    """Model paths, verifier, data and baseline checked before any actor starts."""
    check_model_path(config.actor_path, "actor_path")
    check_model_path(config.critic_path, "critic_path")
    check_verifier(resolve_verifier_name(config.verifier, config.data), "verifier")
    baseline = final_correct_by_question(read_eval_samples(config.baseline)) if config.baseline else None
    examples = load_examples(config.data, "data")
    if baseline is not None and not baseline.keys() & {e.question for e in examples}:
        raise ValueError(f"baseline {config.baseline!r} shares no question with data: is it an evaluation of the same dataset?")
    roles = {"actor": RoleResources(config.num_actor_workers, 1.0, 1.0), "critic": RoleResources(config.num_critic_workers, 1.0, 1.0),
             "scorer": RoleResources(config.num_scorers, 0.0, 0.0)}
    return EvaluatePlan(Prepared({"data": examples}, roles), baseline)


def run(config: EvaluateConfig, plan: EvaluatePlan | None = None) -> dict[str, float]:
    """Evaluate (actor, critic) on `data`; writes eval.json, eval_samples.jsonl, eval_chart.png."""
    from cdra.recipes.session import resolve_actor, resolve_model

    plan = plan or prepare(config)
    started = time.perf_counter()
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    actor_path = resolve_actor(config.actor_path)
    critic_path = resolve_model(config.critic_path, "critic")
    baseline, examples = plan.baseline, plan.prepared.data["data"]
    init_ray(config.ray_address)
    actor, actor_engines = speaker(actor_path, config.actor_engine, config.num_actor_workers, config.prompts)
    critic, critic_engines = speaker(critic_path, config.critic_engine, config.num_critic_workers, config.prompts)
    scorers = ScorerPool(resolve_verifier_name(config.verifier, config.data), config.num_scorers, config.verifier_timeout_s)
    try:
        report = evaluate_critique(actor, critic, oracle(scorers), examples, config.eval, tag="eval", seed=config.seed)
    finally:
        actor_engines.close()
        critic_engines.close()
        for a in scorers.actors:
            ray.kill(a)
    metrics = {**report.metrics, **plan.prepared.skipped_metrics(), "eval/num_examples": float(len(examples)),
               "time/elapsed_s": time.perf_counter() - started}
    if baseline is not None:
        metrics.update(paired_comparison(baseline, final_correct_by_question(report.records)))
    (out / "eval.json").write_text(json.dumps({"actor": actor_path, "critic": critic_path, "metrics": metrics}, indent=2, sort_keys=True))
    with (out / "eval_samples.jsonl").open("w") as f:
        for rec in report.records:
            f.write(json.dumps(rec) + "\n")
    plot_metrics({"eval": metrics}, out / "eval_chart.png", title=f"{Path(critic_path).name} on {config.data.format}")
    print(format_table({"eval": metrics}))
    if baseline is not None:
        print(format_paired(metrics))
    return metrics
