"""Process-reward judgements: Pers-GenPRM "**SCORE:**" parsing and GenPRM Yes/No probabilities
(ALGORITHMS.md sections 4-5)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

__all__ = ["parse_prm_score", "reasoned_step_score", "yes_probability", "mean_yes_probability", "token_after"]

_SCORE_LABEL_RE = re.compile(r"(?:\*\*)?SCORE(?:\*\*)?\s*:\s*(?:\*\*)?")
_NUMBER_RE = re.compile(r"\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)")


def parse_prm_score(judgement: str) -> float | None:
    """Score from the LAST "**SCORE:** s" label (also "SCORE: s"), clamped to [-1, 1].

    None when there is no label or the last label is not followed by a number; the caller maps
    None to 0 and counts it.
    """
    last = None
    for m in _SCORE_LABEL_RE.finditer(judgement or ""):
        last = m
    if last is None:
        return None
    m = _NUMBER_RE.match(judgement, last.end())
    if m is None:
        return None
    return max(-1.0, min(1.0, float(m.group(1))))


_REASONING_RE = re.compile(r"input (-?\d+) \(expected (-?\d+)\).*?last digits (\d) vs (\d)", re.DOTALL)


def reasoned_step_score(judgement: str) -> float | None:
    """The verdict a step judgement's own reasoning implies, for judges that write
    ``input A (expected B): ...; recomputed ...=V; last digits X vs Y: ...`` (the zoo genprm,
    `cdra.data.synthetic.step_judgement_text`): +1 when A == B and X == Y, else -1; None
    without those values. The judge still reads the step and recomputes it; only the final
    comparisons are read off its stated numbers instead of its own "same" / "DIFFERENT" marks."""
    m = _REASONING_RE.search(judgement or "")
    if m is None:
        return None
    start, expected, recomputed, written = m.groups()
    return 1.0 if start == expected and recomputed == written else -1.0


def _missing(lp: float | None) -> bool:
    return lp is None or math.isnan(lp) or lp == -math.inf


def yes_probability(logprob_yes: float | None, logprob_no: float | None) -> float:
    """P(Yes) / (P(Yes) + P(No)) from the two token logprobs (numerically stable).

    A missing logprob (None, -inf or nan) means that token was not in the top-k: only Yes
    present -> 1.0, only No present -> 0.0, neither -> 0.5.
    """
    my, mn = _missing(logprob_yes), _missing(logprob_no)
    if my and mn:
        return 0.5
    if my:
        return 0.0
    if mn:
        return 1.0
    d = logprob_no - logprob_yes  # type: ignore[operator]
    if d >= 0:
        e = math.exp(-d)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(d))


def mean_yes_probability(pairs: Iterable[tuple[float | None, float | None]]) -> float:
    """GenPRM step reward: `yes_probability` averaged over sampled judgements (0.5 if none)."""
    ps = [yes_probability(y, n) for y, n in pairs]
    return sum(ps) / len(ps) if ps else 0.5


def token_after(token_texts: list[str], marker: str) -> int | None:
    """Index of the first token after the last occurrence of ``marker`` in the concatenated
    ``token_texts`` (a judgement's tokens, decoded one by one): where a GenPRM writes its Yes/No
    after ``\\boxed{``. None if the marker is absent or nothing follows it."""
    text = "".join(token_texts)
    at = text.rfind(marker)
    if at < 0:
        return None
    end, pos = at + len(marker), 0
    for i, piece in enumerate(token_texts):
        if pos >= end:
            return i
        pos += len(piece)
    return None
