"""Preference pairs for DPO and step-DPO (ALGORITHMS.md section 5). Pure functions.

Best-of-N pairs: per question, the correct solutions ranked by their PRM solution score, the top
``top_correct`` of them, each paired with up to ``max_incorrect`` incorrect ones (the highest
scored first: the wrong solutions the PRM likes best are the ones worth pushing down); plus
correct-vs-correct pairs among those top ones whose score gap exceeds ``min_gap`` (the higher
scored is chosen).

Step-DPO pairs: a prefix state with at least one completion reaching the gold answer and one not
gives (correct completion, incorrect completion) pairs that share exactly the prefix. The prefix
goes into the pair's prompt, so the response masks, and with them the loss, cover the
continuations only: the part from the first diverging step on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cdra.algos.experience import Sample

__all__ = ["Scored", "TextPair", "ranked_pairs", "completion_pairs", "solution_text_pairs", "step_text_pairs", "pair_sample"]


@dataclass(frozen=True)
class Scored:
    """One solution to a question: its index among the question's N, correctness, PRM score."""

    index: int
    correct: bool
    score: float


@dataclass(frozen=True)
class TextPair:
    """A preference pair as text: the policy prompt, the shared prefix ("" for whole solutions),
    and the chosen / rejected continuations after it."""

    question_id: str
    prompt: str
    prefix: str
    chosen: str
    rejected: str
    kind: str  # "correct_vs_incorrect", "score_gap" or "step"


def _by_score(solutions: Sequence[Scored]) -> list[Scored]:
    return sorted(solutions, key=lambda s: (-s.score, s.index))  # ties: the earlier sample first (deterministic)


def ranked_pairs(solutions: Sequence[Scored], top_correct: int = 10, max_incorrect: int = 10,
                 min_gap: float = 0.4) -> list[tuple[int, int, str]]:
    """(chosen index, rejected index, kind) of one question's best-of-N pairs (module docstring)."""
    correct = _by_score([s for s in solutions if s.correct])[:top_correct]
    incorrect = _by_score([s for s in solutions if not s.correct])[:max_incorrect]
    pairs = [(c.index, w.index, "correct_vs_incorrect") for c in correct for w in incorrect]
    pairs += [(a.index, b.index, "score_gap") for i, a in enumerate(correct) for b in correct[i + 1:] if a.score - b.score > min_gap]
    return pairs


def completion_pairs(correct: Sequence[bool], max_pairs: int) -> list[tuple[int, int]]:
    """(chosen, rejected) completion indices of one prefix: each completion that reached the gold
    answer against each that did not, in index order, at most ``max_pairs``."""
    return [(i, j) for i, ok in enumerate(correct) if ok for j, bad in enumerate(correct) if not bad][:max_pairs]


def solution_text_pairs(rows: Sequence[dict], scores: dict[tuple[str, int], float], top_correct: int, max_incorrect: int,
                        min_gap: float) -> list[TextPair]:
    """Best-of-N pairs of full-solution rows (``question_id, solution_index, prompt, response,
    correct``; the synthesize output's ``kind == "full"`` rows or an experience export's), scored
    by ``scores[(question_id, solution_index)]``. A pair of two equal texts is dropped (it teaches
    nothing), and a repeated pair is kept once."""
    by_question: dict[str, list[dict]] = {}
    for r in rows:
        by_question.setdefault(r["question_id"], []).append(r)
    out: list[TextPair] = []
    for qid, group in by_question.items():
        index = {r["solution_index"]: r for r in group}
        scored = [Scored(r["solution_index"], bool(r["correct"]), scores[(qid, r["solution_index"])]) for r in group]
        seen: set[tuple[str, str]] = set()
        for c, w, kind in ranked_pairs(scored, top_correct, max_incorrect, min_gap):
            chosen, rejected = index[c]["response"], index[w]["response"]
            if chosen == rejected or (chosen, rejected) in seen:
                continue
            seen.add((chosen, rejected))
            out.append(TextPair(qid, index[c]["prompt"], "", chosen, rejected, kind))
    return out


def step_text_pairs(rows: Sequence[dict], max_pairs_per_prefix: int) -> list[TextPair]:
    """Step-DPO pairs of prefix rows (``kind == "prefix"``: ``prefix``, ``completions``,
    ``completion_correct``): chosen and rejected continue the same prefix, one reaching gold."""
    out: list[TextPair] = []
    for r in rows:
        if r["kind"] != "prefix":
            continue
        texts = r["completions"]
        for c, w in completion_pairs(r["completion_correct"], max_pairs_per_prefix):
            if texts[c] and texts[w] and texts[c] != texts[w]:
                out.append(TextPair(r["question_id"], r["prompt"], r["prefix"], texts[c], texts[w], "step"))
    return out


def pair_sample(prompt_ids: list[int], prefix_ids: list[int], chosen_ids: list[int], rejected_ids: list[int],
                eos_id: int | None, prompt_id: str = "", group_id: int = 0) -> Sample:
    """One DPO `Sample`: the prefix joins the prompt (both sides share exactly prompt + prefix
    tokens, and the loss is on the continuations only), each continuation ends with EOS (the
    policy learns where a solution stops, as it does when sampling)."""
    end = [eos_id] if eos_id is not None else []
    return Sample(prompt_ids=list(prompt_ids) + list(prefix_ids), response_ids=list(chosen_ids) + end,
                  rejected_ids=list(rejected_ids) + end, prompt_id=prompt_id, group_id=group_id)
