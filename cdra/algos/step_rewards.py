"""Step PPO's per-token rewards (ALGORITHMS.md section 5): the PRM's step score at each step's
last token, a KL penalty to the reference on every token, each token's reward clipped.

The rewards are for GAE (`cdra.algos.advantages.gae`, gamma 1, lambda 0.95), so a step's score
is paid once, where the step is complete (the token the PRM read it at), and the returns of
the tokens before it carry it back. Index j is response token j, as `Sample.token_rewards`.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["step_end_indices", "kl_penalties", "step_ppo_rewards"]


def step_end_indices(step_spans: Sequence[tuple[int, int]]) -> list[int | None]:
    """The response index of each step's last token ([start, end) token spans); None for a
    step holding no token (the PRM read nothing there, `PRMPool` scores it 0)."""
    return [end - 1 if end > start else None for start, end in step_spans]


def kl_penalties(logprobs: Sequence[float], ref_logprobs: Sequence[float], kl_coef: float) -> list[float]:
    """-kl_coef * (log pi - log ref) per token: the k1 estimate, whose sum over a sampled
    response is an unbiased estimate of the sequence KL (as a reward, not a loss term)."""
    if len(logprobs) != len(ref_logprobs):
        raise ValueError(f"{len(logprobs)} policy log-probs for {len(ref_logprobs)} reference log-probs")
    return [-kl_coef * (p - r) for p, r in zip(logprobs, ref_logprobs)]


def step_ppo_rewards(step_spans: Sequence[tuple[int, int]], step_scores: Sequence[float], logprobs: Sequence[float],
                     ref_logprobs: Sequence[float], kl_coef: float = 0.1, clip: float = 5.0,
                     outcome: float = 0.0) -> list[float]:
    """Reward of each response token: its KL penalty, plus the step score at each step's last
    token, plus ``outcome`` (an answer checker's weighted score; 0 by default) at the last
    token, the sum clipped to [-clip, clip]. The clip is on each token's whole reward, so
    neither a PRM reduction outside [0, 1] nor a token far from the reference dominates the
    returns. Steps past the response (spans from another tokenization) raise ValueError."""
    if len(step_spans) != len(step_scores):
        raise ValueError(f"{len(step_spans)} step spans for {len(step_scores)} step scores")
    if clip <= 0:
        raise ValueError(f"reward clip must be > 0, got {clip}")
    rewards = kl_penalties(logprobs, ref_logprobs, kl_coef)
    for index, score in zip(step_end_indices(step_spans), step_scores):
        if index is None:
            continue
        if not 0 <= index < len(rewards):
            raise ValueError(f"step ends at token {index}, outside the response of {len(rewards)} tokens")
        rewards[index] += score
    if rewards:
        rewards[-1] += outcome
    return [min(clip, max(-clip, r)) for r in rewards]
