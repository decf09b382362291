"""Evaluation: the one generate-and-grade path.

`generate_and_grade` samples completions on an engine pool and grades them; every in-run
evaluation (GRPO, SFT, expert iteration through `Session.evaluate`; Critique-RL's attempts,
refinements and samples through `evaluate_critique`) goes through it. `evaluate_policy` turns
it into a plain policy's metrics, as fractions of the examples:

- ``accuracy`` greedy answers graded correct, ``reward`` their mean score (the same for 0/1
  verifiers), ``format`` the verifier's format rate;
- with samples at a temperature: ``sampled_reward`` / ``sampled_format`` over all samples,
  ``pass@k`` (unbiased estimator from the n samples, `cdra.algos.sampled_metrics.pass_at_k`) and
  ``maj@k`` (the most frequent extracted answer of the first k samples is right).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdra.algos.sampled_metrics import majority_correct, pass_at_k
from cdra.data.example import TaskExample
from cdra.data.loaders import DatasetSpec
from cdra.runtime.rollout import Completion, SamplingConfig
from cdra.runtime.scorer import ScoreItem, ScoreResult

# the verifier that grades each dataset format's answers
VERIFIER_OF_FORMAT = {"synthetic": "gsm8k", "gsm8k": "gsm8k", "math": "math", "aqua": "aqua", "synthetic_mcq": "mcq"}
R1_TEMPLATES = ("r1_zero", "r1_short")


def resolve_verifier_name(verifier: str, spec: DatasetSpec, template: str = "") -> str:
    """`auto`: r1_zero for r1 templates, else the verifier of the dataset's format (a table
    dataset: of its `kind`)."""
    if verifier != "auto":
        return verifier
    if template in R1_TEMPLATES:
        return "r1_zero"
    return VERIFIER_OF_FORMAT.get(spec.format, spec.kind)


# ----------------------------------------------------------------------------- generate and grade


@dataclass
class Graded:
    completion: Completion
    result: ScoreResult

    @property
    def correct(self) -> bool:
        return is_correct(self.result)


def is_correct(result: ScoreResult) -> bool:
    return result.score > 0.5


def grade(scorers: Any, responses: list[str], golds: list[str]) -> list[ScoreResult]:
    """The verifier's results for (response, gold) pairs, on a `ScorerPool`."""
    return scorers.score([ScoreItem(r, g) for r, g in zip(responses, golds)])


def generate_and_grade(pool: Any, scorers: Any, prompts: list[list[int]], golds: list[str], sampling: SamplingConfig,
                       n: int = 1) -> list[list[Graded]]:
    """`n` completions of each prompt on `pool` (a `RolloutPool`), each graded against its gold."""
    if len(prompts) != len(golds):
        raise ValueError(f"generate_and_grade: {len(prompts)} prompts but {len(golds)} golds")
    groups = pool.generate(prompts, sampling, n)
    results = grade(scorers, [c.text for g in groups for c in g], [gold for gold, g in zip(golds, groups) for _ in g])
    flat = iter(results)
    return [[Graded(c, next(flat)) for c in g] for g in groups]


def mean_metrics(graded: list[list[Graded]], prefix: str = "") -> dict[str, float]:
    flat = [x for g in graded for x in g]
    return {f"{prefix}reward": sum(x.result.score for x in flat) / len(flat),
            f"{prefix}format": sum(x.result.details.get("format_reward", 0.0) for x in flat) / len(flat)}


def sampled_metrics(graded: list[list[Graded]], pass_k: list[int], maj_k: list[int],
                    answer_of: Callable[[str], str | None] | None = None) -> dict[str, float]:
    """pass@k over each example's n samples; maj@k by vote over the first k (needs `answer_of`)."""
    out = {}
    for k in pass_k:
        out[f"pass@{k}"] = sum(pass_at_k(len(g), sum(x.correct for x in g), k) for g in graded) / len(graded)
    for k in maj_k if answer_of is not None else []:
        votes = [majority_correct([answer_of(x.completion.text) for x in g[:k]], [x.correct for x in g[:k]]) for g in graded]
        out[f"maj@{k}"] = sum(votes) / len(votes)
    return out


@dataclass
class EvalReport:
    metrics: dict[str, float]
    records: list[dict[str, Any]]


def evaluate_policy(pool: Any, scorers: Any, prompts: list[list[int]], examples: list[TaskExample], greedy: SamplingConfig,
                    sampled: SamplingConfig | None = None, samples: int = 0, pass_k: list[int] | None = None,
                    maj_k: list[int] | None = None, answer_of: Callable[[str], str | None] | None = None,
                    tag: str = "eval") -> EvalReport:
    """Greedy accuracy and format rate, and with `sampled` (and `samples` > 0) pass@k and maj@k."""
    if not examples:
        raise ValueError("evaluate_policy: no examples")
    golds = [e.answer for e in examples]
    first = generate_and_grade(pool, scorers, prompts, golds, greedy, 1)
    metrics = {**mean_metrics(first), "accuracy": sum(g[0].correct for g in first) / len(first)}
    records = [{"id": e.id, "question": e.question, "answer": e.answer, "greedy": g[0].completion.text, "correct": g[0].correct,
                "format": g[0].result.details.get("format_reward", 0.0)} for e, g in zip(examples, first)]
    if sampled is not None and samples > 0:
        graded = generate_and_grade(pool, scorers, prompts, golds, sampled, samples)
        metrics.update(mean_metrics(graded, "sampled_"))
        metrics.update(sampled_metrics(graded, pass_k or [], maj_k or [], answer_of))
        for rec, g in zip(records, graded):
            rec["samples"] = [{"text": x.completion.text, "correct": x.correct} for x in g]
    return EvalReport({f"{tag}/{k}": v for k, v in metrics.items()}, records)


def add_record_fields(records: list[dict[str, Any]], fields: Callable[[dict[str, Any]], dict[str, float]]) -> dict[str, float]:
    """Add a recipe's per-record fields to each record; returns each field's mean over the
    records that have it."""
    sums: dict[str, list[float]] = {}
    for record in records:
        for key, value in fields(record).items():
            record[key] = value
            sums.setdefault(key, []).append(value)
    return {k: sum(v) / len(v) for k, v in sums.items()}


def write_eval_records(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def read_eval_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def answer_extractor(verifier: str) -> Callable[[str], str | None] | None:
    """The answer a built-in verifier reads from a response (what maj@k votes on); None for
    a user verifier, whose answers cdra cannot read."""
    from cdra.rewards import extract_answer, extract_gsm8k_answer, normalize_math_answer, r1_zero_answer

    kind = verifier.removesuffix("_lenient")
    if kind == "r1_zero":
        return r1_zero_answer
    if kind == "gsm8k":
        return extract_gsm8k_answer
    if kind == "math":
        return lambda text: (lambda a: None if a is None else normalize_math_answer(a))(extract_answer(text, "math"))
    if kind in ("aqua", "mcq"):
        return lambda text: extract_answer(text, kind)  # type: ignore[arg-type]
    return None
