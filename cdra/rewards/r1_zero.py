"""Reward of the CS336 ``r1_zero`` prompt (ALGORITHMS.md section 1)."""

from __future__ import annotations

from cdra.rewards.extraction import last_boxed_only_string, remove_boxed
from cdra.rewards.grading import grade_answer
from cdra.rewards.hedging import names_several_values

__all__ = ["r1_zero_reward_fn", "r1_zero_answer", "R1_ZERO_FORMAT_MARKER"]

R1_ZERO_FORMAT_MARKER = "</think> <answer>"
_ZERO = {"format_reward": 0.0, "answer_reward": 0.0, "reward": 0.0}


def r1_zero_answer(response: str) -> str | None:
    """The answer of a well-formatted response: the text after the last ``<answer>`` up to the
    next ``</answer>`` (or the end); the content of its last box if it has one. None when the
    format does not hold or a box is unbalanced."""
    if R1_ZERO_FORMAT_MARKER not in response or "</answer>" not in response:
        return None
    answer = response.rsplit("<answer>", 1)[1].split("</answer>", 1)[0]
    if "\\boxed" in answer or "\\fbox" in answer:
        return remove_boxed(last_boxed_only_string(answer))
    return answer.strip()


def r1_zero_reward_fn(
    response: str,
    ground_truth: str | int | float | list,
    fast: bool = False,
    strict: bool = True,
) -> dict[str, float]:
    """``{format_reward, answer_reward, reward}`` for one response.

    Format holds iff the response contains ``"</think> <answer>"`` (exactly one space) and
    ``"</answer>"``; otherwise all three are 0. The answer (see `r1_zero_answer`) is graded
    with `grade_answer` against the ground truth (any of a list). ``reward == answer_reward``:
    the format alone earns nothing. ``strict`` (default): an answer that names several values
    ("42, 41", two different boxes, "not 42"; `names_several_values`) earns 0 whatever the
    gold. ``fast=True`` skips math-verify.
    """
    if R1_ZERO_FORMAT_MARKER not in response or "</answer>" not in response:
        return dict(_ZERO)
    answer = r1_zero_answer(response)
    golds = ground_truth if isinstance(ground_truth, (list, tuple)) else [ground_truth]
    if strict and answer is not None:
        written = response.rsplit("<answer>", 1)[1].split("</answer>", 1)[0]
        if any(names_several_values(written, str(g)) for g in golds):
            answer = None
    correct = answer is not None and any(grade_answer(answer, str(g), fast=fast) for g in golds)
    a = 1.0 if correct else 0.0
    return {"format_reward": 1.0, "answer_reward": a, "reward": a}
