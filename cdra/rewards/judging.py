"""Pure helpers of the judge service: token offsets of a response, step token spans, pair
fan-out, Yes/No probabilities from top-k log-probs, and the default aggregations.

No Ray, no vLLM: the runtime (`cdra.runtime.judge`) feeds these with engine outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cdra.rewards.prm import yes_probability
from cdra.rewards.steps import split_steps

__all__ = [
    "Judgement",
    "JudgeError",
    "incremental_offsets",
    "token_spans",
    "unordered_pairs",
    "yes_probability_at",
    "mean_unparsed_zero",
    "steps_splitter",
]

_INCOMPLETE = "\ufffd"  # what a byte-level decode shows for a cut multi-byte character


@dataclass
class Judgement:
    """One sampled judgement as the engine returned it.

    ``top_logprobs[t]`` maps token id -> log-prob at generated position ``t`` (the top-k plus
    the sampled token); None when the judge asked for no log-probs.
    """

    text: str
    token_ids: list[int]
    top_logprobs: list[dict[int, float]] | None = None
    finish_reason: str = ""


@dataclass
class JudgeError:
    """Why a judge prompt got no judgements: ``kind`` is "timeout" or "error"."""

    kind: str
    message: str


def incremental_offsets(ids: Sequence[int], decode: Callable[[list[int]], str]) -> tuple[str, list[tuple[int, int]]]:
    """Decode ``ids`` one token at a time; returns the text and each token's [start, end) in it.

    Each new token is decoded together with the tokens of the previous emitted piece as left
    context (tokenizers that drop a leading space when a token stands alone then still agree
    with a whole-sequence decode). A token that ends inside a multi-byte character emits
    nothing; it gets the empty span at the start of the character that a later token
    completes, so it belongs to the same step as that character.
    """
    text = ""
    offsets: list[tuple[int, int] | None] = []
    prefix = read = 0  # ids[prefix:read] is context already emitted; ids[read:] is pending
    for i in range(len(ids)):
        before = decode(list(ids[prefix:read]))
        after = decode(list(ids[prefix : i + 1]))
        offsets.append(None)
        if len(after) <= len(before) or after.endswith(_INCOMPLETE) or not after.startswith(before):
            continue
        start = len(text)
        text += after[len(before) :]
        for j in range(read, i):
            offsets[j] = (start, start)
        offsets[i] = (start, len(text))
        prefix, read = read, i + 1
    end = len(text)
    return text, [o if o is not None else (end, end) for o in offsets]


def token_spans(offsets: Sequence[tuple[int, int]], char_spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Token [start, end) of each character span [cs, ce), from per-token offsets.

    A token belongs to the span holding its last character (a token such as " Step" that
    starts in the gap before a step marker goes with that step); an empty token with the
    character it leads up to. Tokens outside every span (a preamble, a skipped special token
    at the end) belong to none. A span holding no token gets an empty span at its place.
    """
    keys = [end - 1 if end > start else start for start, end in offsets]
    out: list[tuple[int, int]] = []
    t = 0
    for cs, ce in char_spans:
        if ce < cs:
            raise ValueError(f"bad character span ({cs}, {ce})")
        while t < len(keys) and keys[t] < cs:
            t += 1
        first = t
        while t < len(keys) and keys[t] < ce:
            t += 1
        out.append((first, t))
    return out


def steps_splitter(max_steps: int = 5, include_preamble: bool = False) -> Callable[[str], list[tuple[int, int]]]:
    """The CDRA splitter ("Step N:" markers, `split_steps`) as a text -> character spans function."""
    def split(text: str) -> list[tuple[int, int]]:
        return [(s.start, s.end) for s in split_steps(text, max_steps, include_preamble)]
    return split


def unordered_pairs(n: int) -> list[tuple[int, int]]:
    """Every unordered pair (i, j), i < j, of a group of ``n``."""
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def _logsumexp(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    top = max(finite)
    return top + math.log(sum(math.exp(v - top) for v in finite))


def yes_probability_at(judgement: Judgement, yes_ids: Sequence[int], no_ids: Sequence[int], position: int = 0) -> float | None:
    """P(Yes) / (P(Yes) + P(No)) from the top-k log-probs at generated ``position`` (negative
    counts from the end); several ids per side (" Yes", "Yes") are summed. Neither side in
    the top-k gives 0.5 (as `yes_probability`); None when the position was not generated or
    the judgement carries no log-probs (the caller counts it as unparsed)."""
    table = judgement.top_logprobs
    if not table or not -len(table) <= position < len(table):
        return None
    at = table[position]
    return yes_probability(_logsumexp([at.get(i) for i in yes_ids]), _logsumexp([at.get(i) for i in no_ids]))


def mean_unparsed_zero(scores: Sequence[float | None]) -> float:
    """Mean of N sampled judgements' scores, an unparsed one (None) counting 0; 0 for none."""
    return sum(s or 0.0 for s in scores) / len(scores) if scores else 0.0
