"""The synthetic arithmetic-chain task: the embedded default task of every job.

A problem is a start value and a short chain of operations, e.g.
``Start with 3. Add 4. Multiply by 2.`` with gold ``14``. Solutions are written one step per
line (``Step 1: 3+4=7``), compact and regular enough for a tiny character-level model to learn,
and every step can be checked exactly, so the task also yields step labels (for PRMs) and
reference critiques (for Critique-RL warm starts).

Everything is deterministic given a seed. Splits partition the question space by a stable
hash of the question text, so train, validation and test never share a question, whatever
the seed or the configuration.
"""

from __future__ import annotations

import hashlib
import random
import re
import warnings
from dataclasses import dataclass

from cdra.data.example import CHOICE_LETTERS, TaskExample

OP_WORDS = {"+": "Add", "-": "Subtract", "*": "Multiply by"}

# Hash buckets (out of 20) of each split: test 15 %, validation 5 %, train 80 %.
_SPLIT_BUCKETS = {"test": range(0, 3), "validation": range(3, 4), "train": range(4, 20)}
_SPLIT_ALIASES = {"val": "validation", "valid": "validation", "dev": "validation"}


def _apply(op: str, left: int, right: int) -> int:
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    raise ValueError(f"unknown op {op!r}; expected one of '+', '-', '*'")


@dataclass(frozen=True)
class ArithmeticStep:
    """One step ``left op right = value``. ``value`` may be wrong (corrupted steps)."""

    op: str
    left: int
    right: int
    value: int

    def text(self) -> str:
        return f"{self.left}{self.op}{self.right}={self.value}"

    def expression(self) -> str:
        return f"{self.left}{self.op}{self.right}"

    def true_value(self) -> int:
        return _apply(self.op, self.left, self.right)

    def is_arithmetic_correct(self) -> bool:
        return self.true_value() == self.value


@dataclass(frozen=True)
class ArithmeticProblem:
    id: str
    start: int
    ops: tuple[tuple[str, int], ...]
    steps: tuple[ArithmeticStep, ...]
    question: str
    answer: str


@dataclass(frozen=True)
class SyntheticConfig:
    """Difficulty knobs. ``ops`` may be given as a string such as ``"+-"``."""

    num_steps: int = 2
    max_operand: int = 9
    ops: tuple[str, ...] = ("+", "-", "*")
    max_value: int = 99

    def __post_init__(self) -> None:
        ops = self.ops
        if isinstance(ops, str):
            ops = tuple(ops)
        else:
            ops = tuple(ops)
        object.__setattr__(self, "ops", ops)
        if not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ValueError(f"SyntheticConfig.num_steps must be an int >= 1, got {self.num_steps!r}")
        if not isinstance(self.max_operand, int) or self.max_operand < 1:
            raise ValueError(
                f"SyntheticConfig.max_operand must be an int >= 1, got {self.max_operand!r}"
            )
        if not isinstance(self.max_value, int) or self.max_value < 1:
            raise ValueError(f"SyntheticConfig.max_value must be an int >= 1, got {self.max_value!r}")
        if not ops or any(op not in OP_WORDS for op in ops):
            raise ValueError(
                f"SyntheticConfig.ops must be a non-empty subset of '+', '-', '*', got {self.ops!r}"
            )


def canonical_split(split: str) -> str:
    """Map a split name (``train``, ``validation``/``val``/``dev``, ``test``) to its canonical form."""
    name = _SPLIT_ALIASES.get(split, split)
    if name not in _SPLIT_BUCKETS:
        raise ValueError(
            f"unknown split {split!r}; expected one of {sorted(_SPLIT_BUCKETS) + sorted(_SPLIT_ALIASES)}"
        )
    return name


def split_of_question(question: str) -> str:
    """The split a question belongs to (stable hash of its text; independent of seed and config)."""
    digest = hashlib.sha256(("cdra-synthetic-split:" + question).encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") % 20
    for name, buckets in _SPLIT_BUCKETS.items():
        if bucket in buckets:
            return name
    raise AssertionError("unreachable")


def question_text(start: int, ops: tuple[tuple[str, int], ...]) -> str:
    parts = [f"Start with {start}."]
    parts += [f"{OP_WORDS[op]} {operand}." for op, operand in ops]
    return " ".join(parts)


def make_problem(start: int, ops, id: str = "synthetic-0") -> ArithmeticProblem:
    """Build a problem by hand from a start value and ``[(op, operand), ...]``."""
    ops = tuple((str(op), int(operand)) for op, operand in ops)
    if not ops:
        raise ValueError("a problem needs at least one operation")
    steps = []
    value = int(start)
    for op, operand in ops:
        if op not in OP_WORDS:
            raise ValueError(f"unknown op {op!r}; expected one of '+', '-', '*'")
        new = _apply(op, value, operand)
        steps.append(ArithmeticStep(op, value, operand, new))
        value = new
    return ArithmeticProblem(
        id=id,
        start=int(start),
        ops=ops,
        steps=tuple(steps),
        question=question_text(int(start), ops),
        answer=str(value),
    )


def _feasible_operands(op: str, cur: int, config: SyntheticConfig) -> range:
    """Operands for ``op`` that keep the next value in [0, max_value]. Operands are >= 1."""
    if op == "+":
        return range(1, min(config.max_operand, config.max_value - cur) + 1)
    if op == "-":
        return range(1, min(config.max_operand, cur) + 1)
    if cur == 0:
        return range(1, config.max_operand + 1)
    return range(1, min(config.max_operand, config.max_value // cur) + 1)


def _sample_chain(rng: random.Random, config: SyntheticConfig):
    """One (start, ops) chain with every value in [0, max_value], or None at a dead end.

    Sampling only among feasible (op, operand) pairs is resampling done exactly: the result
    has the distribution of "draw, reject out-of-range, redraw" restricted to ops that can
    succeed.
    """
    cur = rng.randint(1, min(config.max_operand, config.max_value))
    start = cur
    ops = []
    for _ in range(config.num_steps):
        options = [(op, _feasible_operands(op, cur, config)) for op in config.ops]
        options = [(op, r) for op, r in options if len(r) > 0]
        if not options:
            return None
        op, operands = options[rng.randrange(len(options))]
        operand = operands[rng.randrange(len(operands))]
        ops.append((op, operand))
        cur = _apply(op, cur, operand)
    return start, tuple(ops)


def make_problems(
    n: int,
    seed: int,
    config: SyntheticConfig = SyntheticConfig(),
    split: str = "train",
    *,
    unique: bool = True,
) -> list[ArithmeticProblem]:
    """``n`` problems of ``split``, deterministic in (n, seed, config, split).

    Questions are drawn and kept only if their hash bucket belongs to ``split``. With
    ``unique`` (default) no question repeats within the call; when the split's question space
    is too small for ``n`` distinct questions a warning is issued and repeats fill the rest.
    The first k problems of a call with n >= k are the same as those of a call with n = k.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    split = canonical_split(split)
    rng = random.Random(f"cdra-synthetic:{seed}:{split}")
    problems: list[ArithmeticProblem] = []
    seen: set[str] = set()
    stale = 0  # consecutive in-split draws that repeated a question
    dead_ends = 0
    while len(problems) < n:
        chain = _sample_chain(rng, config)
        if chain is None:
            dead_ends += 1
            if dead_ends > 10000 and not problems:
                raise ValueError(f"SyntheticConfig {config} admits (almost) no valid problems")
            continue
        start, ops = chain
        question = question_text(start, ops)
        if split_of_question(question) != split:
            continue
        if unique and question in seen:
            stale += 1
            if stale <= max(5000, 20 * len(seen)):
                continue
            warnings.warn(
                f"synthetic {split} split has only about {len(seen)} distinct questions for "
                f"{config}; repeating questions to reach n={n}",
                stacklevel=2,
            )
            unique = False
        stale = 0
        seen.add(question)
        problems.append(make_problem(start, ops, id=f"synthetic-{split}-{len(problems)}"))
    return problems


# ----------------------------------------------------------------------------------------------
# Solutions


def format_steps_solution(
    problem: ArithmeticProblem,
    steps: tuple[ArithmeticStep, ...] | None = None,
    *,
    answer: str | None = None,
) -> str:
    """``"Step 1: 3+4=7\\nStep 2: 7*2=14\\nThe answer is 14."``.

    ``steps`` overrides the problem's own (e.g. corrupted) steps; the final answer is the last
    step's value unless ``answer`` is given (the MCQ variant passes a letter).
    """
    steps = problem.steps if steps is None else tuple(steps)
    if not steps:
        raise ValueError("a solution needs at least one step")
    final = str(steps[-1].value) if answer is None else answer
    lines = [f"Step {i}: {step.text()}" for i, step in enumerate(steps, start=1)]
    lines.append(f"The answer is {final}.")
    return "\n".join(lines)


def format_r1_solution(
    problem: ArithmeticProblem,
    steps: tuple[ArithmeticStep, ...] | None = None,
    *,
    answer: str | None = None,
) -> str:
    """``" Step 1: 3+4=7. Step 2: 7*2=14. </think> <answer>14</answer>"``.

    The leading space follows the r1 prompts, which end with ``<think>``.
    """
    steps = problem.steps if steps is None else tuple(steps)
    if not steps:
        raise ValueError("a solution needs at least one step")
    final = str(steps[-1].value) if answer is None else answer
    body = " ".join(f"Step {i}: {step.text()}." for i, step in enumerate(steps, start=1))
    return f" {body} </think> <answer>{final}</answer>"


def format_sr_r1_solution(problem: ArithmeticProblem, steps: tuple[ArithmeticStep, ...] | None = None, *,
                          tagged: bool = True) -> str:
    """The SR-R1 format, one step per line: ``"<think>\\nStep 1: 3+4=7.\\nStep 2: 7*2=14.\\n</think>\\n<answer>\\n14\\n</answer>"``;
    untagged (``tagged=False``) the answer follows ``</think>`` as ``"The answer is 14."`` (no answer tags)."""
    steps = problem.steps if steps is None else tuple(steps)
    if not steps:
        raise ValueError("a solution needs at least one step")
    body = "\n".join(f"Step {i}: {step.text()}." for i, step in enumerate(steps, start=1))
    final = str(steps[-1].value)
    tail = f"<answer>\n{final}\n</answer>" if tagged else f"The answer is {final}."
    return f"<think>\n{body}\n</think>\n{tail}"


_STEP_RE = re.compile(r"(\d+)\s*([+\-*])\s*(\d+)\s*=\s*(-?\d+)")


def parse_steps(text: str) -> tuple[ArithmeticStep, ...]:
    """Every ``a op b = c`` found in ``text``, in order (e.g. a model's response)."""
    return tuple(
        ArithmeticStep(op, int(left), int(right), int(value))
        for left, op, right, value in _STEP_RE.findall(text)
    )


def judge_steps(problem: ArithmeticProblem, steps) -> list[bool]:
    """Per-step correctness labels of ``steps`` against ``problem``.

    Definition: step i is correct iff its own arithmetic is right (``left op right == value``)
    AND its inputs are the true ones (``left`` is the true value before step i and
    ``(op, right)`` is the problem's i-th operation) AND every earlier step is correct. So the
    first wrong step and every step after it are False, even a later step that happens to
    recompute a true value; steps beyond the problem's length are False.
    """
    labels: list[bool] = []
    ok = True
    for i, step in enumerate(steps):
        if ok:
            if i >= len(problem.steps):
                ok = False
            else:
                truth = problem.steps[i]
                ok = (
                    step.is_arithmetic_correct()
                    and step.left == truth.left
                    and step.op == truth.op
                    and step.right == truth.right
                )
        labels.append(ok)
    return labels


def corrupt_steps(
    problem: ArithmeticProblem, rng: random.Random
) -> tuple[tuple[ArithmeticStep, ...], list[bool]]:
    """Make one step's arithmetic wrong and carry the wrong value forward.

    A step index is drawn uniformly; its value is shifted by a nonzero delta in {-2,-1,1,2}
    chosen so that it and every later value stay >= 0. Later steps are recomputed correctly
    from the wrong value. The labels follow :func:`judge_steps`: True before the corrupted
    step, False from it on. Since operands are >= 1, every op is injective in its left input,
    so the final answer (the last step's value) is always wrong.
    """
    idx = rng.randrange(len(problem.steps))

    def build(delta: int):
        steps = list(problem.steps[:idx])
        bad = problem.steps[idx]
        wrong = ArithmeticStep(bad.op, bad.left, bad.right, bad.value + delta)
        steps.append(wrong)
        cur = wrong.value
        for op, operand in problem.ops[idx + 1 :]:
            new = _apply(op, cur, operand)
            steps.append(ArithmeticStep(op, cur, operand, new))
            cur = new
        return steps

    candidates = []
    for delta in (-2, -1, 1, 2):
        steps = build(delta)
        if all(s.value >= 0 for s in steps):
            candidates.append(steps)
    steps = tuple(candidates[rng.randrange(len(candidates))])  # +1, +2 always qualify
    labels = [i < idx for i in range(len(steps))]
    return steps, labels


# ----------------------------------------------------------------------------------------------
# Critiques


def _explanation(problem: ArithmeticProblem, steps, i: int, correct: bool, earlier_ok: bool) -> str:
    step = steps[i]
    expr = step.expression()
    true = step.true_value()
    if true != step.value:
        return f"{expr} is {true}, not {step.value}."
    if correct:
        return f"{expr} is {step.value}."
    if i < len(problem.steps):
        truth = problem.steps[i]
        if (step.left, step.op, step.right) != (truth.left, truth.op, truth.right):
            return f"{expr} is {step.value}, but it should be {truth.text()}."
        if not earlier_ok:
            return f"{expr} is {step.value}, but an earlier step is wrong."
        return f"{expr} is {step.value}."
    return f"{expr} is {step.value}, but the problem has no step {i + 1}."


# The comparison a critic writes into each step sentence: its own recomputation of the step,
# then the last digit of that value next to the last digit of the response's value and the
# outcome. A 2-layer model cannot learn, in minutes, to compare two numbers written far apart
# (it kept saying "Correct"), but it does learn to compare two adjacent digits when that
# outcome is weighted in the loss (`comparison_mark_offsets`); the verdict line then only has
# to notice a "DIFFERENT" above it. The last digit catches every corrupted step (values shift
# by 1 or 2) and 94 % of the tiny actor's real mistakes (measured on its sampled attempts).
SAME, DIFFERENT = "same", "DIFFERENT"
_MARK_RE = re.compile(rf"last digits \d vs \d: (?=(?:{SAME}|{DIFFERENT})\b)")


def step_check(step: ArithmeticStep) -> str:
    """``38+7=35; recomputed 38+7=45; last digits 5 vs 5: same`` (see above)."""
    true = step.true_value()
    mark = SAME if true % 10 == step.value % 10 else DIFFERENT
    return f"{step.text()}; recomputed {step.expression()}={true}; last digits {true % 10} vs {step.value % 10}: {mark}"


def comparison_mark_offsets(text: str) -> list[int]:
    """Character offsets of every comparison outcome (``same``/``DIFFERENT``) in ``text``."""
    return [m.end() for m in _MARK_RE.finditer(text)]


_RECOMPUTED_RE = re.compile(r"recomputed [^=\n]+=(-?\d+)")


def recomputation_offsets(text: str) -> list[int]:
    """Character offsets of every digit of every recomputed value (``recomputed 38+7=45``: the
    4 and the 5) in ``text``. A critic that copies the response's value here instead of
    computing it always finds the digits "same"; weighting these tokens teaches the recomputation."""
    return [k for m in _RECOMPUTED_RE.finditer(text) for k in range(m.start(1), m.end(1)) if text[k].isdigit()]


def critique_text(
    problem: ArithmeticProblem,
    steps,
    step_correct: list[bool],
    *,
    final_answer: str | None = None,
) -> str:
    """The reference Critique-RL critique of a solution made of ``steps``.

    Per step three lines (``Step sentence: <step_check>`` / ``Correctness of the step:
    Correct|Wrong`` / ``Explanation: 3+4 is 7.`` or ``3+4 is 7, not 8.``), then
    ``Correctness of the final answer: Correct|Wrong``, Correct iff the final answer (the last
    step's value unless ``final_answer`` is given) equals the gold answer. ``step_correct``
    decides each step's verdict (use :func:`judge_steps` or the labels of
    :func:`corrupt_steps`); the explanation states the arithmetic, and for a step that is
    arithmetically right but wrong, what the step should have been.
    """
    steps = tuple(steps)
    step_correct = list(step_correct)
    if len(step_correct) != len(steps):
        raise ValueError(f"{len(steps)} steps but {len(step_correct)} correctness labels")
    lines = []
    earlier_ok = True
    for i, (step, ok) in enumerate(zip(steps, step_correct)):
        lines.append(f"Step sentence: {step_check(step)}")
        lines.append(f"Correctness of the step: {'Correct' if ok else 'Wrong'}")
        lines.append(f"Explanation: {_explanation(problem, steps, i, ok, earlier_ok)}")
        earlier_ok = earlier_ok and ok
    if final_answer is None:
        final_answer = str(steps[-1].value) if steps else ""
    final_ok = final_answer.strip() == problem.answer
    lines.append(f"Correctness of the final answer: {'Correct' if final_ok else 'Wrong'}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Step judgements (the generative PRM of CDRA)


def slip_input(problem: ArithmeticProblem, rng: random.Random) -> tuple[tuple[ArithmeticStep, ...], list[bool]]:
    """The tiny policy's second most common mistake: a step starts from a wrong value (off by
    1 or 2 from the true one) and computes correctly from it; later steps go on from there.
    Labels as :func:`judge_steps` (False from the slipped step on)."""
    idx = rng.randrange(len(problem.steps))
    candidates = []
    for delta in (-2, -1, 1, 2):
        steps = list(problem.steps[:idx])
        cur = problem.steps[idx].left + delta
        if cur < 0:
            continue
        for op, operand in problem.ops[idx:]:
            new = _apply(op, cur, operand)
            steps.append(ArithmeticStep(op, cur, operand, new))
            cur = new
        if all(s.value >= 0 for s in steps):
            candidates.append(tuple(steps))
    steps = candidates[rng.randrange(len(candidates))]  # +1, +2 always qualify
    return steps, judge_steps(problem, steps)


def step_input_expected(problem: ArithmeticProblem, steps, i: int) -> int:
    """The value step ``i`` should start from: the problem's start value, else the value the
    previous step (as written) arrived at."""
    return problem.start if i == 0 else steps[i - 1].value


def step_locally_correct(problem: ArithmeticProblem, steps, i: int) -> bool:
    """Is step ``i`` right given the steps before it (as written): it starts from the expected
    value, applies the problem's i-th operation, and its arithmetic is right. The first step
    that is not locally correct is the first False of :func:`judge_steps`, so a solution has
    every step right iff every step is locally correct."""
    step = steps[i]
    if i >= len(problem.ops) or (step.op, step.right) != problem.ops[i]:
        return False
    return step.left == step_input_expected(problem, steps, i) and step.is_arithmetic_correct()


def step_truths(problem: ArithmeticProblem, step_texts: list[str]) -> list[bool] | None:
    """Ground truth of each judged step of a response (the texts of its "Step N:" spans):
    `step_locally_correct` given the steps as written. None when a span does not hold exactly
    one ``a op b = c`` (its truth is unknown)."""
    parsed = [parse_steps(t) for t in step_texts]
    if any(len(p) != 1 for p in parsed):
        return None
    steps = tuple(p[0] for p in parsed)
    return [step_locally_correct(problem, steps, i) for i in range(len(steps))]


def step_judgement_text(problem: ArithmeticProblem, steps, i: int) -> str:
    """The reference Pers-GenPRM judgement of step ``i``:
    ``**Reasoning:** input 7 (expected 7): same; recomputed 7+4=11; last digits 1 vs 1: same
    **SCORE:** 1``. The input check compares the step's starting value with the expected one
    (:func:`step_input_expected`), the arithmetic check is :func:`step_check`'s last-digit
    comparison; the score is 1 if the step is locally correct, else -1."""
    step = steps[i]
    expected = step_input_expected(problem, steps, i)
    mark = SAME if step.left == expected else DIFFERENT
    true = step.true_value()
    digits = SAME if true % 10 == step.value % 10 else DIFFERENT
    score = 1 if step_locally_correct(problem, steps, i) else -1
    return (f"**Reasoning:** input {step.left} (expected {expected}): {mark}; recomputed {step.expression()}={true}; "
            f"last digits {true % 10} vs {step.value % 10}: {digits} **SCORE:** {score}")


_JUDGEMENT_KEY_RE = re.compile(rf"\(expected (\d+)\): (?={SAME}|{DIFFERENT})|: (?={SAME}|{DIFFERENT})|\*\*SCORE:\*\* (?=-?1)")


def judgement_key_offsets(text: str) -> list[int]:
    """Character offsets of the tokens a judgement turns on: the expected input's digits, both
    comparison outcomes, the recomputed value's digits and the score."""
    keys = set(recomputation_offsets(text))
    for m in _JUDGEMENT_KEY_RE.finditer(text):
        if m.group(1) is not None:
            keys.update(range(m.start(1), m.end(1)))
        keys.add(m.end())
    return sorted(keys)


_QUESTION_RE = re.compile(r"Start with (\d+)\.((?: (?:Add|Subtract|Multiply by) \d+\.)*)$")
_OP_RE = re.compile(r"(Add|Subtract|Multiply by) (\d+)\.")
_WORD_OPS = {word: op for op, word in OP_WORDS.items()}


def problem_from_question(question: str) -> ArithmeticProblem | None:
    """The synthetic problem a question text states (None if it is not one of this task's)."""
    m = _QUESTION_RE.fullmatch(question.strip())
    if m is None:
        return None
    ops = tuple((_WORD_OPS[word], int(n)) for word, n in _OP_RE.findall(m.group(2)))
    return make_problem(int(m.group(1)), ops) if ops else None


def process_correct(problem: ArithmeticProblem, response: str) -> bool:
    """Process accuracy's ground truth: the response writes exactly the problem's number of
    steps and every one is right (`judge_steps`). The final answer line is not looked at."""
    steps = parse_steps(response)
    return len(steps) == len(problem.steps) and all(judge_steps(problem, steps))


# ----------------------------------------------------------------------------------------------
# TaskExamples


def to_example(problem: ArithmeticProblem, *, solution_format: str = "steps") -> TaskExample:
    """A "gsm8k"-kind example; ``solution_format`` is "steps" (default) or "r1"."""
    if solution_format == "steps":
        solution = format_steps_solution(problem)
    elif solution_format == "r1":
        solution = format_r1_solution(problem)
    else:
        raise ValueError(f"solution_format must be 'steps' or 'r1', got {solution_format!r}")
    return TaskExample(
        id=problem.id,
        question=problem.question,
        answer=problem.answer,
        solution=solution,
        source="synthetic",
        kind="gsm8k",
    )


def make_examples(
    n: int,
    seed: int,
    config: SyntheticConfig = SyntheticConfig(),
    split: str = "train",
    *,
    solution_format: str = "steps",
) -> list[TaskExample]:
    return [to_example(p, solution_format=solution_format) for p in make_problems(n, seed, config, split)]


def _distractors(problem: ArithmeticProblem, rng: random.Random, k: int) -> list[int]:
    gold = int(problem.answer)
    pool: set[int] = set()
    for _ in range(4):  # plausible mistakes: a wrong step carried to the end
        steps, _ = corrupt_steps(problem, rng)
        pool.add(steps[-1].value)
    spread = max(5, k)
    pool.update(gold + d for d in range(-spread, spread + 1))
    pool = {v for v in pool if v >= 0 and v != gold}
    return rng.sample(sorted(pool), k)


def make_mcq_examples(
    n: int,
    seed: int,
    config: SyntheticConfig = SyntheticConfig(),
    split: str = "train",
    num_choices: int = 5,
) -> list[TaskExample]:
    """Multiple-choice variant (kind "mcq"): the same problems as :func:`make_problems` with
    the same arguments, the question followed by ``" Options: (A) 12 (B) 14 ..."``, the answer
    a letter. ``choices`` are distinct non-negative numbers, one of them the gold.
    """
    if not 2 <= num_choices <= len(CHOICE_LETTERS):
        raise ValueError(f"num_choices must be in [2, {len(CHOICE_LETTERS)}], got {num_choices}")
    split = canonical_split(split)
    rng = random.Random(f"cdra-synthetic-mcq:{seed}:{split}:{num_choices}")
    examples = []
    for i, problem in enumerate(make_problems(n, seed, config, split)):
        values = _distractors(problem, rng, num_choices - 1)
        gold_pos = rng.randrange(num_choices)
        values.insert(gold_pos, int(problem.answer))
        choices = tuple(str(v) for v in values)
        letter = CHOICE_LETTERS[gold_pos]
        options = " ".join(f"({CHOICE_LETTERS[j]}) {c}" for j, c in enumerate(choices))
        examples.append(
            TaskExample(
                id=f"synthetic-mcq-{split}-{i}",
                question=f"{problem.question} Options: {options}",
                answer=letter,
                solution=format_steps_solution(problem, answer=letter),
                choices=choices,
                source="synthetic_mcq",
                kind="mcq",
            )
        )
    return examples
