"""Critique-RL's support: prompts per role, and the critique-and-refine evaluation (ALGORITHMS.md section 2).

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
by `jobs/evaluate.py` (mode=critique). Its attempts, refinements and samples are generated and
graded on the one path every evaluation uses (`cdra.recipes.evaluate`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cdra.config import check
from cdra.data.chat import CHAT_TEMPLATES, format_chat
from cdra.data.example import TaskExample
from cdra.data.prompts import render_prompt
from cdra.recipes.evaluation import EvalReport, Graded, generate_and_grade, grade, is_correct, sampled_metrics
from cdra.rewards import parse_final_verdict
from cdra.runtime.groups import RolloutPool
from cdra.runtime.rollout import Completion, SamplingConfig
from cdra.runtime.scorer import ScoreResult, ScorerPool

Role = Literal["inference", "critique", "refine"]
Grader = Callable[[list[str], list[str]], list[bool]]

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

    def grade_texts(responses: list[str], golds: list[str]) -> list[bool]:
        return [is_correct(r) for r in grade(scorers, responses, golds)]

    return grade_texts


class GraderScorer:
    """A `Grader` in the scorer interface (`score(items)`), so its marks can go through
    `generate_and_grade`: 1.0 for a right answer, else 0."""

    def __init__(self, grade: Grader) -> None:
        self.grade = grade

    def score(self, items: list) -> list[ScoreResult]:
        return [ScoreResult(float(ok)) for ok in self.grade([i.response for i in items], [i.ground_truth for i in items])]


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


def evaluate_critique(actor: Speaker, critic: Speaker, grade: Grader, examples: list[TaskExample], config: CritiqueEvalConfig,
                      tag: str = "eval", seed: int = 0) -> EvalReport:
    """First attempt -> critique -> refinement (x rounds), all greedy, plus optional pass@k."""
    if not examples:
        raise ValueError("evaluate_critique: no examples")
    golds = [e.answer for e in examples]
    scorer = GraderScorer(grade)

    def attempt(speaker: Speaker, role: Role, fields: list[dict[str, str]], sampling: SamplingConfig, n: int = 1) -> list[list[Graded]]:
        return generate_and_grade(speaker.pool, scorer, [speaker.prompts.encode(role, **f) for f in fields], golds, sampling, n)

    first = attempt(actor, "inference", [attempt_fields(e) for e in examples], greedy(config.attempt_max_tokens))
    attempts, correct0 = [g[0].completion.text for g in first], [g[0].correct for g in first]
    current, correct = attempts, correct0
    records = [{"id": e.id, "question": e.question, "answer": e.answer, "attempt": a, "correct0": c} for e, a, c in zip(examples, attempts, correct0)]
    metrics: dict[str, float] = {}
    for round_index in range(1, config.rounds + 1):
        critiques = [g[0].text for g in critic.generate("critique", [critique_fields(e, y) for e, y in zip(examples, current)], greedy(config.critique_max_tokens))]
        verdicts = [parse_final_verdict(c) for c in critiques]
        outputs = attempt(actor, "refine", [refine_fields(e, y, c) for e, y, c in zip(examples, current, critiques)], greedy(config.refine_max_tokens))
        refined, refined_correct = [g[0].completion.text for g in outputs], [g[0].correct for g in outputs]
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
        graded = attempt(actor, "inference", [attempt_fields(e) for e in examples], sampling, config.pass_samples)
        metrics.update(sampled_metrics(graded, config.pass_k, []))
    return EvalReport({f"{tag}/{k}": v for k, v in metrics.items()}, records)


# ----------------------------------------------------------------------------- reporting


POLICY_ROWS = ("accuracy", "reward", "format", "sampled_reward", "sampled_format")
TABLE_ROWS = ("acc0", "acc", "delta", "delta_c_to_i", "delta_i_to_c", "acc_dis", "acc_dis_balanced", "acc_dis_correct", "acc_dis_incorrect", "verdict_rate")


def _table_keys(columns: dict[str, dict[str, float]], tag: str) -> list[str]:
    """The fixed rows present in any column, then per-round accuracies, pass@k and maj@k."""
    present = {k.split("/", 1)[1] for c in columns.values() for k in c if k.startswith(f"{tag}/")}
    extra = sorted(k for k in present if k.startswith(("acc_round", "pass@", "maj@")))
    return [k for k in POLICY_ROWS + TABLE_ROWS if k in present] + extra


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
