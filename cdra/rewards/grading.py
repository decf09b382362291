"""Answer grading: a cheap in-process fast path, then math-verify.

The time limit is not here: the scorer runs each verifier call (extraction and grading
together) in a worker process under one per-call limit and replaces a worker that overruns
(`cdra.runtime.scorer`). So math-verify's own signal-based timeouts are switched off — they
work only in a main thread and cannot interrupt C-level work (a regex backtracking on
``"{" * 5000``, big-integer arithmetic for ``10^{10^{10^{10}}}``) — and a hanging grade is
bounded by that one limit. Model output is never ``eval``-ed: it only reaches math-verify's
parser.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading

from cdra.rewards.extraction import normalize_math_answer, normalize_number

__all__ = [
    "normalize_number",
    "grade_answer",
    "fast_grade",
    "GradingStats",
    "grading_stats",
    "reset_grading_stats",
]

logger = logging.getLogger(__name__)


# -------------------------------------------------------------------------- stats


@dataclasses.dataclass
class GradingStats:
    """Counters over `grade_answer` calls in this process.

    calls: all calls; fast_path: decided without math-verify; math_verify: sent to it;
    errors: math-verify raised (the call returned False).
    """

    calls: int = 0
    fast_path: int = 0
    math_verify: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


_stats = GradingStats()
_stats_lock = threading.Lock()


def _count(**inc: int) -> None:
    with _stats_lock:
        for k, v in inc.items():
            setattr(_stats, k, getattr(_stats, k) + v)


def grading_stats() -> GradingStats:
    """A snapshot (copy) of the process-wide grading counters."""
    with _stats_lock:
        return dataclasses.replace(_stats)


def reset_grading_stats() -> None:
    with _stats_lock:
        for f in dataclasses.fields(GradingStats):
            setattr(_stats, f.name, 0)


# ---------------------------------------------------------------------- fast path

_MCQ_RE = re.compile(r"\(?\s*([A-Ja-j])\s*\)?[.:]?")
_TEXT_WRAP_RE = re.compile(r"\\(?:text|textbf|mathrm)\s*\{([^{}]*)\}")


def _mcq_letter(s: str, upper_only: bool = False) -> str | None:
    t = _TEXT_WRAP_RE.sub(lambda m: m.group(1), s.strip().replace("$", "")).strip()
    m = _MCQ_RE.fullmatch(t)
    if m is None or (upper_only and not m.group(1).isupper()):
        return None
    return m.group(1).upper()


def fast_grade(predicted: str, gold: str) -> bool | None:
    """Cheap decision without math-verify: True / False when decided, None when undecided.

    - empty prediction or gold: False;
    - gold is an option letter A-J (capital, optionally parenthesized): the prediction's
      letter compared case-insensitively, nothing else (decided). A lower-case gold such as
      "i" or "e" is math, not an option;
    - both plain numbers (`normalize_number`): equal -> True; both integers and different ->
      False; differing decimals stay undecided (math-verify rounds);
    - equal after `normalize_math_answer`: True.
    """
    p = (predicted or "").strip()
    g = (gold or "").strip()
    if not p or not g:
        return False
    gl = _mcq_letter(g, upper_only=True)
    if gl is not None:
        return _mcq_letter(p) == gl
    np_, ng = normalize_number(p), normalize_number(g)
    if np_ is not None and ng is not None:
        if np_ == ng:
            return True
        if "." not in np_ and "." not in ng:
            return False
    if p == g or normalize_math_answer(p) == normalize_math_answer(g):
        return True
    return None


# ------------------------------------------------------------------- math-verify


def _parse(s: str):
    from math_verify import parse

    # Wrapping in \boxed{} lets LaTeX without $ delimiters parse ("\frac{1}{2}", "x^2+1");
    # unbalanced input falls back to the raw string.
    return parse("\\boxed{" + s + "}", parsing_timeout=None) or parse(s, parsing_timeout=None)


def _math_verify_grade(predicted: str, gold: str) -> bool:
    from math_verify import verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    try:
        g, p = _parse(gold), _parse(predicted)
        return bool(g and p and verify(g, p, timeout_seconds=None))
    except Exception as e:  # noqa: BLE001 - sympy raises anything on odd input: a wrong answer, counted
        logger.debug("math-verify error: %s", e)
        _count(errors=1)
        return False


# -------------------------------------------------------------------------- API


def grade_answer(predicted: str, gold: str, *, fast: bool = False) -> bool:
    """Whether `predicted` is the same answer as `gold`.

    The fast path (`fast_grade`) decides plain numbers, option letters and identical
    normalized strings. Otherwise math-verify (``parse`` then ``verify(gold, pred)``) decides,
    with no time limit of its own (see the module docstring); an error in it returns False and
    is counted in `grading_stats()`. ``fast=True`` skips math-verify (undecided -> False).
    """
    _count(calls=1)
    if predicted is None or gold is None:
        _count(fast_path=1)
        return False
    predicted, gold = str(predicted), str(gold)
    decided = fast_grade(predicted, gold)
    if decided is not None:
        _count(fast_path=1)
        return decided
    if fast:
        _count(fast_path=1)
        return False
    _count(math_verify=1)
    return _math_verify_grade(predicted, gold)
