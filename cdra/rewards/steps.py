"""Splitting a step-formatted answer ("Step 1: ... Step 2: ...") into character spans (CDRA)."""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["StepSpan", "split_steps"]

# "Step N:" not glued to a preceding letter ("Substep 1:" is not a marker).
_MARKER_RE = re.compile(r"(?<![A-Za-z])Step[ \t]*(\d+)[ \t]*:")


class StepSpan(NamedTuple):
    """One step: ``text == original[start:end]`` (end exclusive). `index` is 0-based
    (step "Step k:" has index k-1)."""

    index: int
    start: int
    end: int
    text: str


def split_steps(text: str, max_steps: int = 5, include_preamble: bool = False) -> list[StepSpan]:
    """Split `text` at its "Step N:" markers.

    Only the first consecutive run Step 1, Step 2, ... counts; it stops at a gap or a repeat
    (a later "Step 1:" or "Step 4:" after "Step 2:" is text of the last step). A step runs from
    its marker to the character before the next kept marker; the last kept step runs to the
    end of the text, also when `max_steps` cuts the run. Text before "Step 1:" belongs to no
    step unless `include_preamble`, which starts the first step at 0. Without a "Step 1:"
    marker the whole text is one step; an empty text has none.
    """
    if not text:
        return []
    if max_steps < 1:
        raise ValueError("max_steps must be >= 1")
    starts: list[int] = []
    for m in _MARKER_RE.finditer(text):
        n = int(m.group(1))
        if not starts:
            if n == 1:
                starts.append(m.start())
            continue
        if n != len(starts) + 1:
            break
        starts.append(m.start())
    if not starts:
        return [StepSpan(0, 0, len(text), text)]
    starts = starts[:max_steps]
    if include_preamble:
        starts[0] = 0
    ends = starts[1:] + [len(text)]
    return [StepSpan(i, s, e, text[s:e]) for i, (s, e) in enumerate(zip(starts, ends))]
