"""Solution scores from PRM step scores, and best-of-N selection (ALGORITHMS.md section 5).

Pure functions: a PRM scores each step of a solution (P(class >= 2) at the step-end token); a
solution's score reduces those step scores, and best-of-N picks one of N solutions to a question
by that score, by majority vote over their extracted answers, at random, or by the oracle.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from typing import Literal

__all__ = ["SolutionScore", "solution_score", "pick_by_score", "pick_majority", "pick_random", "oracle_correct"]

SolutionScore = Literal["product", "min", "sum", "last"]


def solution_score(step_scores: Sequence[float], how: SolutionScore = "product") -> float:
    """Reduce a solution's step scores to one number. ``product`` (the default) treats step
    scores as independent probabilities of being right; ``min`` is the weakest step; ``sum``
    rewards length; ``last`` reads only the final step. A solution with no step scores 0 (it
    gives the PRM nothing to vouch for)."""
    if not step_scores:
        return 0.0
    if how == "product":
        return math.prod(step_scores)
    if how == "min":
        return min(step_scores)
    if how == "sum":
        return math.fsum(step_scores)
    if how == "last":
        return step_scores[-1]
    raise ValueError(f"solution score must be product, min, sum or last, got {how!r}")


def pick_by_score(scores: Sequence[float]) -> int:
    """Index of the highest-scoring solution (the first one among ties, so the pick is deterministic)."""
    if not scores:
        raise ValueError("pick_by_score: no solutions")
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def pick_majority(answers: Sequence[str | None]) -> int:
    """Index of a solution whose extracted answer is the most common (None = no answer, never
    voted for unless every answer is None). Ties between answers go to the answer seen first;
    the pick is that answer's first solution."""
    if not answers:
        raise ValueError("pick_majority: no solutions")
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return 0
    top = max(votes.values())
    winner = next(a for a in answers if a is not None and votes[a] == top)
    return answers.index(winner)


def pick_random(num_solutions: int, rng: random.Random) -> int:
    """A uniformly random solution index drawn from ``rng`` (seeded by the caller)."""
    if num_solutions < 1:
        raise ValueError("pick_random: no solutions")
    return rng.randrange(num_solutions)


def oracle_correct(correct: Sequence[bool]) -> bool:
    """Best-of-N's ceiling: some solution is correct."""
    return any(correct)
