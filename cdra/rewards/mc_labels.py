"""Monte-Carlo process labels (ALGORITHMS.md §5, Math-Shepherd): which prefixes of a solution
become labelled states, and the labels of a state from its completions.

A state is a solution cut after step i (i of its n steps). Its value is the number of its K
completions that reach the gold answer (0..K); a full solution's value is K * correct. The hard
label says whether any completion got there, the soft label is the fraction that did.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence


def first_prefix_step(num_steps: int, min_step_fraction: float) -> int:
    """The smallest step count a kept prefix may have: floor(min_step_fraction * num_steps),
    at least 1 (an empty prefix labels no step). The epsilon keeps floor(0.2 * 15) at 3 where
    binary floating point lands a hair below an integer."""
    return max(1, math.floor(min_step_fraction * num_steps + 1e-9))


def prefix_candidates(num_steps: int, min_step_fraction: float) -> range:
    """Step counts of the intermediate states a solution of `num_steps` steps may give: from
    `first_prefix_step` to num_steps - 1 (all n steps is the full solution, labelled as such)."""
    return range(first_prefix_step(num_steps, min_step_fraction), num_steps)


def prefix_rng(seed: int, question_id: str, solution_index: int) -> random.Random:
    """The generator of one solution's prefix choice: it depends only on the run's seed and the
    solution's identity, so a resumed run (or any batching) keeps the same prefixes. Python
    seeds a str through SHA-512, not the per-process str hash."""
    return random.Random(f"{seed}:{question_id}:{solution_index}")


def choose_prefixes(num_steps: int, keep_probability: float, min_step_fraction: float, rng: random.Random) -> list[int]:
    """The step counts kept: each candidate independently with `keep_probability`."""
    return [i for i in prefix_candidates(num_steps, min_step_fraction) if rng.random() < keep_probability]


def mc_value(completion_correct: Sequence[bool]) -> int:
    """Completions of a prefix that reach the gold answer."""
    return sum(bool(c) for c in completion_correct)


def full_value(correct: bool, k: int) -> int:
    """A full solution stands for K completions that all end as it does."""
    return k if correct else 0


def hard_label(value: int) -> int:
    """Math-Shepherd's hard estimate: 1 if any completion reached the gold answer."""
    return int(value > 0)


def soft_label(value: int, k: int) -> float:
    """Math-Shepherd's soft estimate: the fraction of completions that reached it."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return value / k


def label_agreement(values: Sequence[int], k: Sequence[int], truths: Sequence[bool], soft_threshold: float = 0.5) -> dict[str, float]:
    """How often the MC labels of states agree with their true correctness (a state is truly
    right when every step through it is right). Hard: value > 0 means "right"; soft: value / K
    >= `soft_threshold`. Also per side: the share of truly wrong states labelled wrong and of
    truly right ones labelled right (a PRM trained on the labels cannot beat them)."""
    if not (len(values) == len(k) == len(truths)):
        raise ValueError("values, k and truths must have one entry per state")
    n = len(values)
    if n == 0:
        return {}
    hard = [hard_label(v) == 1 for v in values]
    soft = [soft_label(v, kk) >= soft_threshold for v, kk in zip(values, k)]
    right = [i for i in range(n) if truths[i]]
    wrong = [i for i in range(n) if not truths[i]]
    out = {
        "hard_agreement": sum(h == t for h, t in zip(hard, truths)) / n,
        "soft_agreement": sum(s == t for s, t in zip(soft, truths)) / n,
        "truly_right_share": len(right) / n,
    }
    for name, labels in (("hard", hard), ("soft", soft)):
        if right:
            out[f"{name}_right_labelled_right"] = sum(labels[i] for i in right) / len(right)
        if wrong:
            out[f"{name}_wrong_labelled_wrong"] = sum(not labels[i] for i in wrong) / len(wrong)
    return out
