"""SR-R1: pairwise self-judgements -> Elo ratings -> group rewards (ALGORITHMS.md section 3),
plus the open-r1 style format and tag-count rewards."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from typing import Literal

from cdra.rewards.grading import grade_answer

__all__ = [
    "parse_winner",
    "elo_ratings",
    "scale_group_rewards",
    "sr_r1_format_reward",
    "tag_count_reward",
    "sr_r1_rewards",
    "sr_r1_advantages",
    "shows_first",
    "pair_winner",
    "group_elo_rewards",
    "sr_r1_answer",
    "sr_r1_accuracy",
]

_WINNER_RE = re.compile(r"winner\s*:([^\n]*)", re.IGNORECASE)
_RESPONSE_LETTER_RE = re.compile(r"\bresponse\s*([ab])\b", re.IGNORECASE)
_BARE_LETTER_RE = re.compile(r"[\s*_\"'(\[]*([AB])\b")


def parse_winner(judgement: str) -> Literal["A", "B"] | None:
    """The winner named by the LAST "Winner:" line (case-insensitive): "A" or "B".

    "Winner: response B", "**Winner:** Response A" and "Winner: B" parse; a line naming both
    responses, or neither, gives None (the match is dropped).
    """
    last = None
    for m in _WINNER_RE.finditer(judgement or ""):
        last = m
    if last is None:
        return None
    rest = last.group(1)
    letters = {x.upper() for x in _RESPONSE_LETTER_RE.findall(rest)}
    if not letters:
        m = _BARE_LETTER_RE.match(rest)
        if m:
            letters = {m.group(1)}
    if len(letters) != 1:
        return None
    return letters.pop()  # type: ignore[return-value]


def elo_ratings(
    num_players: int,
    matches: Sequence[tuple[int, int]],
    k: float = 16.0,
    passes: int = 10,
) -> list[float]:
    """Elo ratings from (winner, loser) index pairs: all start at 0; `passes` sequential sweeps
    over `matches` in order, each applying E_w = 1 / (1 + 10^((R_l - R_w) / 400)),
    R_w += k (1 - E_w), R_l -= k (1 - E_w)."""
    for w, l in matches:
        if not (0 <= w < num_players and 0 <= l < num_players) or w == l:
            raise ValueError(f"bad match {(w, l)} for {num_players} players")
    r = [0.0] * num_players
    for _ in range(passes):
        for w, l in matches:
            e_w = 1.0 / (1.0 + 10.0 ** ((r[l] - r[w]) / 400.0))
            d = k * (1.0 - e_w)
            r[w] += d
            r[l] -= d
    return r


def scale_group_rewards(
    ratings: Sequence[float], low: float = 0.0, high: float = 3.0
) -> list[float]:
    """Min-max scale a group's ratings to [low, high]; all equal -> the midpoint each."""
    if not ratings:
        return []
    lo, hi = min(ratings), max(ratings)
    if hi - lo <= 0.0:
        return [(low + high) / 2.0] * len(ratings)
    return [low + (high - low) * (x - lo) / (hi - lo) for x in ratings]


_FORMAT_RE = re.compile(r"<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>", re.DOTALL)


def sr_r1_format_reward(text: str) -> float:
    """1.0 iff the whole text is ``<think>\\n...\\n</think>\\n<answer>\\n...\\n</answer>``."""
    return 1.0 if _FORMAT_RE.fullmatch(text or "") else 0.0


def tag_count_reward(text: str) -> float:
    """0.25 for each of "<think>\\n", "\\n</think>\\n", "\\n<answer>\\n", "\\n</answer>" that
    occurs exactly once."""
    text = text or ""
    tags = ("<think>\n", "\n</think>\n", "\n<answer>\n", "\n</answer>")
    return 0.25 * sum(1 for t in tags if text.count(t) == 1)


def sr_r1_rewards(
    elo_scaled: Sequence[float],
    accuracy: Sequence[float],
    format: Sequence[float],  # noqa: A002 - name from the spec
    tag_count: Sequence[float],
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
) -> list[float]:
    """Weighted sum, per completion, of the four SR-R1 reward terms."""
    n = len(elo_scaled)
    if not (len(accuracy) == len(format) == len(tag_count) == n):
        raise ValueError("reward components differ in length")
    we, wa, wf, wt = weights
    return [
        we * e + wa * a + wf * f + wt * t
        for e, a, f, t in zip(elo_scaled, accuracy, format, tag_count)
    ]


def sr_r1_advantages(rewards: Sequence[float], eps: float = 1e-4) -> list[float]:
    """(r - mean) / (std + eps) over the group, std unbiased (n - 1); one element -> [0.0]."""
    n = len(rewards)
    if n == 0:
        return []
    if n == 1:
        return [0.0]
    mean = sum(rewards) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in rewards) / (n - 1))
    return [(x - mean) / (std + eps) for x in rewards]


def shows_first(seed: int, group_id: int, i: int, j: int) -> bool:
    """The fair coin of pair (i, j), i < j, of a group: True when completion i is shown as
    "Response A". A hash of (seed, group, pair), so a run, its resume and its logs agree without
    storing the draws, and the two orders are equally likely."""
    digest = hashlib.sha256(f"sr-r1-coin:{seed}:{group_id}:{i}:{j}".encode()).digest()
    return digest[0] & 1 == 0


def pair_winner(verdict: Literal["A", "B"] | None, i: int, j: int, i_first: bool) -> int | None:
    """The group index of the winner of pair (i, j) from the letter the judge named (None: unparsed)."""
    if verdict is None:
        return None
    return i if (verdict == "A") == i_first else j


def group_elo_rewards(num_players: int, winners: dict[tuple[int, int], int | None], k: float = 16.0,
                      passes: int = 10) -> tuple[list[float], int]:
    """One group's Elo rewards in [0, 3] and how many verdicts were dropped (unparsed, None).

    The matches are played in the fixed pair order (0, 1), (0, 2), ..., (n-2, n-1) whatever the
    dict's order, so a group's rewards depend on its verdicts only."""
    matches, dropped = [], 0
    for i, j in sorted(winners):
        w = winners[(i, j)]
        if w is None:
            dropped += 1
            continue
        if w not in (i, j):
            raise ValueError(f"winner {w} of pair {(i, j)} is neither of its completions")
        matches.append((w, j if w == i else i))
    return scale_group_rewards(elo_ratings(num_players, matches, k, passes)), dropped


_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def sr_r1_answer(text: str) -> str | None:
    """The content of the last ``<answer>...</answer>``, stripped; None without one."""
    found = _ANSWER_RE.findall(text or "")
    return found[-1].strip() if found else None


def sr_r1_accuracy(response: str, truth: str) -> dict[str, float]:
    """The SR-R1 accuracy term as a verifier (``cdra.rewards.elo:sr_r1_accuracy``): the answer
    inside the answer tags graded by math-verify (0/1); format_reward is the SR-R1 format."""
    answer = sr_r1_answer(response)
    correct = float(answer is not None and grade_answer(answer, str(truth)))
    return {"reward": correct, "answer_reward": correct, "format_reward": sr_r1_format_reward(response)}
