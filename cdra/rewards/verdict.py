"""Critique-RL verdict parsing and rewards (ALGORITHMS.md section 2)."""

from __future__ import annotations

import re
from typing import Literal

__all__ = [
    "FINAL_VERDICT_PREFIX",
    "STEP_VERDICT_PREFIX",
    "parse_final_verdict",
    "parse_step_verdicts",
    "discrimination_reward",
    "helpfulness_reward",
    "critique_reward",
]

FINAL_VERDICT_PREFIX = "Correctness of the final answer:"
STEP_VERDICT_PREFIX = "Correctness of the step:"

_FINAL_RE = re.compile(re.escape(FINAL_VERDICT_PREFIX) + r"([^\n]*)", re.IGNORECASE)
_STEP_RE = re.compile(re.escape(STEP_VERDICT_PREFIX) + r"([^\n]*)", re.IGNORECASE)
# Whole words only: "Incorrect" is neither "Correct" nor "Wrong".
_CORRECT_RE = re.compile(r"\bcorrect\b", re.IGNORECASE)
_WRONG_RE = re.compile(r"\bwrong\b", re.IGNORECASE)


def _judge(rest: str) -> bool | None:
    c = _CORRECT_RE.search(rest) is not None
    w = _WRONG_RE.search(rest) is not None
    if c == w:  # both words, or neither: ambiguous
        return None
    return c


def parse_final_verdict(critique: str) -> bool | None:
    """True (Correct) / False (Wrong) from the LAST "Correctness of the final answer:" line.

    The text after the prefix on that line decides; it must name exactly one of the two words.
    None when the line is missing or names both or neither. (The released Critique-RL code
    looks for the expected string anywhere, so "Correct ... Wrong" always scored as right; here
    it is ambiguous = None, which callers count as a wrong judgement.)
    """
    last = None
    for m in _FINAL_RE.finditer(critique or ""):
        last = m
    return None if last is None else _judge(last.group(1))


def parse_step_verdicts(critique: str) -> list[bool | None]:
    """One entry per "Correctness of the step:" line, in order: True / False / None."""
    return [_judge(m.group(1)) for m in _STEP_RE.finditer(critique or "")]


def discrimination_reward(
    verdict: bool | None,
    original_correct: bool,
    dis_reward_values: tuple[float, float] = (1.0, 0.0),
) -> float:
    """Stage I: ``dis_reward_values[0]`` if the verdict matches the oracle, else ``[1]``
    (an unparsed verdict, None, is wrong). ``(1.0, -1.0)`` is the released-code variant."""
    right = verdict is not None and verdict == bool(original_correct)
    return float(dis_reward_values[0] if right else dis_reward_values[1])


# (original correct, refined correct) -> r_help
_RF_TABLES: dict[str, dict[tuple[bool, bool], float]] = {
    "r_refine": {(True, True): 1.0, (True, False): 0.0, (False, True): 1.0, (False, False): 0.0},
    "r_delta": {(True, True): 0.0, (True, False): -1.0, (False, True): 1.0, (False, False): 0.0},
    "r_correct": {(True, True): 0.2, (True, False): 0.0, (False, True): 1.0, (False, False): 0.0},
}


def helpfulness_reward(
    original_correct: bool,
    refined_correct: bool,
    rf_mode: Literal["r_refine", "r_delta", "r_correct"] = "r_refine",
) -> float:
    """Stage II r_help for the transition original -> refined (c->c, c->i, i->c, i->i)."""
    try:
        table = _RF_TABLES[rf_mode]
    except KeyError:
        raise ValueError(f"unknown rf_mode {rf_mode!r}") from None
    return table[(bool(original_correct), bool(refined_correct))]


def critique_reward(
    verdict: bool | None,
    original_correct: bool,
    refined_correct: bool | None,
    stage: Literal["discrimination", "helpfulness"],
    rf_mode: Literal["r_refine", "r_delta", "r_correct"] = "r_refine",
    combine: Literal["code_override", "paper_additive"] = "code_override",
    dis_weight: float = 0.2,
    dis_reward_values: tuple[float, float] = (1.0, 0.0),
) -> float:
    """Reward of one critique.

    Stage "discrimination": `discrimination_reward`. Stage "helpfulness" (needs
    `refined_correct`): with r_help from `helpfulness_reward`,
    ``paper_additive`` = r_help + dis_weight * r_dis;
    ``code_override`` (released code, default) = r_help + dis_weight if the verdict is right,
    else -1.
    """
    r_dis = discrimination_reward(verdict, original_correct, dis_reward_values)
    if stage == "discrimination":
        return r_dis
    if stage != "helpfulness":
        raise ValueError(f"unknown stage {stage!r}")
    if refined_correct is None:
        raise ValueError("stage 'helpfulness' needs refined_correct")
    r_help = helpfulness_reward(original_correct, refined_correct, rf_mode)
    if combine == "paper_additive":
        return r_help + dis_weight * r_dis
    if combine == "code_override":
        right = verdict is not None and verdict == bool(original_correct)
        return r_help + dis_weight if right else -1.0
    raise ValueError(f"unknown combine {combine!r}")
