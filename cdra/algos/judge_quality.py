"""How well a judge's scores separate right steps (or answers) from wrong ones, against known
ground truth: accuracy at a threshold and the ROC AUC of the raw scores."""

from __future__ import annotations

__all__ = ["roc_auc", "judge_quality"]


def roc_auc(scores: list[float], labels: list[bool]) -> float:
    """P(score of a random positive > score of a random negative), ties counting 1/2 (the
    Mann-Whitney statistic); NaN when one class is empty."""
    if len(scores) != len(labels):
        raise ValueError(f"roc_auc: {len(scores)} scores for {len(labels)} labels")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):  # average ranks over ties
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    positives = sum(labels)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    rank_sum = sum(r for r, y in zip(ranks, labels) if y)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def judge_quality(scores: list[float], labels: list[bool], threshold: float = 0.0) -> dict[str, float]:
    """A score above ``threshold`` means "judged right". Balanced accuracy weighs right and
    wrong items equally (a judge that calls everything right scores 0.5)."""
    right = [s > threshold for s, y in zip(scores, labels) if y]
    wrong = [s <= threshold for s, y in zip(scores, labels) if not y]
    rate = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return {"items": float(len(labels)), "wrong_items": float(len(wrong)),
            "accuracy": rate(right + wrong), "right_judged_right": rate(right), "wrong_judged_wrong": rate(wrong),
            "balanced_accuracy": (rate(right) + rate(wrong)) / 2, "auc": roc_auc(scores, labels)}
