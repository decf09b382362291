"""A user verifier: `verifier=my_verifier:last_number` (docs/rewards.md).

Full reward when the last number in the response equals the ground truth, 0.1 when the response
ends with a number that is wrong (it at least answered), 0 when it has no number at all.
"""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def last_number(response: str, ground_truth: str) -> dict[str, float]:
    numbers = _NUMBER.findall(response.replace(",", ""))
    if not numbers:
        return {"reward": 0.0, "format_reward": 0.0, "answer_reward": 0.0}
    correct = float(numbers[-1]) == float(ground_truth.replace(",", ""))
    return {"reward": 1.0 if correct else 0.1, "format_reward": 1.0, "answer_reward": float(correct)}
