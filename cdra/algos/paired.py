"""Paired comparison of two policies on the same questions: per question, which one got it
right. The sign test looks only at the discordant questions (one right, the other wrong), so
it needs no assumption about how hard the questions are."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PairedCounts", "paired_counts", "sign_test_p"]


@dataclass(frozen=True)
class PairedCounts:
    """B against A on ``n`` shared questions: ``gained`` B right where A was wrong, ``lost``
    the reverse. ``p`` is the two-sided exact sign test over the gained + lost questions."""

    n: int
    a_mean: float
    b_mean: float
    gained: int
    lost: int
    p: float

    @property
    def delta(self) -> float:
        return self.b_mean - self.a_mean


def sign_test_p(gained: int, lost: int) -> float:
    """Two-sided exact binomial test of gained vs lost at p = 1/2 (1.0 when both are 0)."""
    if gained < 0 or lost < 0:
        raise ValueError("gained and lost must be >= 0")
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(gained, lost) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_counts(a: dict[str, float], b: dict[str, float]) -> PairedCounts:
    """Compare 0/1 outcomes per question id; both must hold the same ids (a comparison over
    different questions is not paired)."""
    if set(a) != set(b):
        missing = sorted(set(a) ^ set(b))
        raise ValueError(f"paired comparison over different questions: {len(missing)} ids in only one side, e.g. {missing[:3]}")
    if not a:
        raise ValueError("paired comparison of no questions")
    ids = sorted(a)
    gained = sum(b[i] > 0.5 and a[i] <= 0.5 for i in ids)
    lost = sum(a[i] > 0.5 and b[i] <= 0.5 for i in ids)
    return PairedCounts(len(ids), sum(a[i] > 0.5 for i in ids) / len(ids), sum(b[i] > 0.5 for i in ids) / len(ids),
                        gained, lost, sign_test_p(gained, lost))
