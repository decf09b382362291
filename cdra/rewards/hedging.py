"""Hedged answers: a response that names several candidate values ("42 or 41", two boxes with
different contents, "not 42") must not collect the reward of the one that happens to be right.

The graders call `names_several_values` by default (strict); the lenient upstream behaviour is
the `*_lenient` verifiers. Everything is a single left-to-right scan: linear in the input.
"""

from __future__ import annotations

import re

from cdra.rewards.extraction import normalize_math_answer, normalize_number, remove_boxed

__all__ = ["all_boxed_contents", "names_several_values", "top_level_parts"]

_HEDGE_RE = re.compile(r"\b(?:not|isn't|never|neither|nor|except|instead of|rather than)\b|\\neq?\b", re.IGNORECASE)
_OR_RE = re.compile(r"\s+(?:or|and)\s+|\\text\s*\{\s*(?:or|and)\s*\}|\\(?:lor|vee)\b", re.IGNORECASE)
_OPEN, _CLOSE = "([{", ")]}"
_BOX_RE = re.compile(r"\\(?:boxed|fbox)")


def all_boxed_contents(text: str) -> list[str]:
    """The contents of every top-level ``\\boxed{...}`` / ``\\fbox{...}`` / ``\\boxed 5``, left to right."""
    out, pos = [], 0
    for m in _BOX_RE.finditer(text):
        if m.start() < pos:  # a box inside the previous one
            continue
        end = _box_end(text, m.end())
        if end is None:
            break
        out.append(remove_boxed(text[m.start() : end]))
        pos = end
    return out


def _box_end(text: str, i: int) -> int | None:
    """End of the box whose command ends at `i` (braces matched with nesting, escapes skipped)."""
    n, j = len(text), i
    while j < n and text[j] in " \t":
        j += 1
    if j >= n or text[j] != "{":  # the "\boxed 5" form runs to the next "$" or newline
        k = j
        while k < n and text[k] not in "$\n":
            k += 1
        return k if j > i and k > j else None
    depth = 0
    while j < n:
        ch = text[j]
        if ch == "\\":
            j += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return None


def top_level_parts(answer: str) -> list[str]:
    """`answer` split at commas, semicolons and " or " / " and " outside brackets; a plain
    number with thousands commas ("1,234") is one part."""
    if normalize_number(answer) is not None:
        return [answer.strip()]
    parts, depth, current = [], 0, []
    for ch in _OR_RE.sub(";", answer):
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth = max(0, depth - 1)
        if depth == 0 and ch in ",;":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _distinct(values: list[str]) -> int:
    return len({normalize_number(v) or normalize_math_answer(v) for v in values})


def names_several_values(response_answer: str, gold: str) -> bool:
    """Whether an extracted answer hedges: several boxes with different contents, a negation,
    or more distinct top-level values than the gold has (a gold "(3, 4)" or "1, 2" keeps its
    commas; a gold "42" answered "42, 41" or "42 or 41" does not)."""
    boxes = all_boxed_contents(response_answer)
    if len(boxes) > 1 and _distinct(boxes) > 1:
        return True
    if _HEDGE_RE.search(response_answer):
        return True
    answer = boxes[0] if len(boxes) == 1 else response_answer
    return _distinct(top_level_parts(answer)) > max(1, _distinct(top_level_parts(gold)))
