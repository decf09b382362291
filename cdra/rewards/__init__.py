"""Rewards: answer extraction and grading, format rewards, critique verdicts, step splitting,
Elo self-rewards and PRM judgement parsing. Pure Python; no Ray, no vLLM."""

from cdra.rewards.elo import (
    elo_ratings,
    parse_winner,
    scale_group_rewards,
    sr_r1_advantages,
    sr_r1_format_reward,
    sr_r1_rewards,
    tag_count_reward,
)
from cdra.rewards.extraction import (
    extract_answer,
    extract_aqua_answer,
    extract_gsm8k_answer,
    extract_math_answer,
    gsm8k_gold_answer,
    last_boxed_only_string,
    normalize_math_answer,
    remove_boxed,
)
from cdra.rewards.grading import (
    GradingStats,
    fast_grade,
    grade_answer,
    grading_stats,
    normalize_number,
    reset_grading_stats,
)
from cdra.rewards.prm import mean_yes_probability, parse_prm_score, yes_probability
from cdra.rewards.r1_zero import r1_zero_answer, r1_zero_reward_fn
from cdra.rewards.steps import StepSpan, split_steps
from cdra.rewards.verdict import (
    critique_reward,
    discrimination_reward,
    helpfulness_reward,
    parse_final_verdict,
    parse_step_verdicts,
)

__all__ = [
    "GradingStats",
    "StepSpan",
    "critique_reward",
    "discrimination_reward",
    "elo_ratings",
    "extract_answer",
    "extract_aqua_answer",
    "extract_gsm8k_answer",
    "extract_math_answer",
    "fast_grade",
    "grade_answer",
    "grading_stats",
    "gsm8k_gold_answer",
    "helpfulness_reward",
    "last_boxed_only_string",
    "mean_yes_probability",
    "normalize_math_answer",
    "normalize_number",
    "parse_final_verdict",
    "parse_prm_score",
    "parse_step_verdicts",
    "parse_winner",
    "r1_zero_answer",
    "r1_zero_reward_fn",
    "remove_boxed",
    "reset_grading_stats",
    "scale_group_rewards",
    "split_steps",
    "sr_r1_advantages",
    "sr_r1_format_reward",
    "sr_r1_rewards",
    "tag_count_reward",
    "yes_probability",
]
