"""Step-labelled solutions from local files, for training a step judge (PRM) on real data.

Two row formats, read through the same file handling and row errors as `cdra.data.loaders`:

- ``prm800k``: PRM800K's ``{"question": {"problem", "ground_truth_answer"}, "label": {"steps":
  [{"completions": [{"text", "rating"}], "chosen_completion"}]}}``. Each step is its chosen
  completion; a step with no chosen completion (the labeller stopped there) contributes its first
  completion and ends the solution. A rating of null ends the solution before that step.
- ``math_shepherd``: Math-Shepherd's ``{"input", "label"}``: ``input`` is the question followed
  by steps each ending in the tag ``ки``; ``label`` is the same text with each tag replaced by
  ``+`` (right) or ``-`` (wrong).

Labels are -1, 0 or 1 (Math-Shepherd has no 0). `step_judge_pairs` turns solutions into SFT
(prompt, target) pairs for a generative step judge; these rows carry no written reasoning, so
the target states only the score.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cdra.data.example import TaskExample
from cdra.data.loaders import LoadResult, _get_str, _load, _row_id, _RowError
from cdra.data.prompts import render_step_judge

STEP_LABEL_FORMATS = ("prm800k", "math_shepherd")
SHEPHERD_TAG = "ки"


@dataclass(frozen=True)
class StepLabelledSolution:
    id: str
    question: str
    steps: tuple[str, ...]
    labels: tuple[int, ...]
    answer: str | None = None


def _prm800k(record: dict, file: Path, row: int) -> StepLabelledSolution:
    question = record.get("question")
    label = record.get("label")
    if not isinstance(question, dict) or not isinstance(label, dict) or not isinstance(label.get("steps"), list):
        raise _RowError("expected 'question' and 'label' objects with 'label.steps' a list")
    steps, labels = [], []
    for k, step in enumerate(label["steps"], start=1):
        completions = step.get("completions") if isinstance(step, dict) else None
        if not completions:
            raise _RowError(f"step {k} has no completions")
        chosen = step.get("chosen_completion")
        completion = completions[chosen if isinstance(chosen, int) else 0]
        rating = completion.get("rating")
        if rating is None:
            break
        if rating not in (-1, 0, 1):
            raise _RowError(f"step {k}: rating must be -1, 0 or 1, got {rating!r}")
        steps.append(str(completion.get("text", "")).strip())
        labels.append(int(rating))
        if not isinstance(chosen, int):
            break
    if not steps:
        raise _RowError("no rated step")
    answer = question.get("ground_truth_answer")
    return StepLabelledSolution(_row_id(record, "prm800k", file, row), _get_str(question, "problem"), tuple(steps),
                                tuple(labels), None if answer is None else str(answer))


def _math_shepherd(record: dict, file: Path, row: int) -> StepLabelledSolution:
    text, marked = _get_str(record, "input"), _get_str(record, "label")
    pieces = text.split(SHEPHERD_TAG)
    if len(pieces) < 2:
        raise _RowError(f"'input' has no step tag {SHEPHERD_TAG!r}")
    labels, at = [], 0
    for piece in pieces[:-1]:
        at += len(piece)
        if marked[at:at + 1] not in ("+", "-") or marked[at - len(piece):at] != piece:
            raise _RowError(f"'label' does not match 'input' with '+'/'-' in place of step tag {len(labels) + 1}")
        labels.append(1 if marked[at] == "+" else -1)
        at += 1
    question, marker, first = pieces[0].partition("Step 1:")
    if not marker:
        raise _RowError("'input' has no 'Step 1:'")
    steps = [marker + first, *pieces[1:-1]]
    return StepLabelledSolution(_row_id(record, "math_shepherd", file, row), question.strip(),
                                tuple(s.strip() for s in steps), tuple(labels))


def load_step_labelled(path, format: str, on_error: str = "raise", *, limit: int | None = None,
                       split: str | None = None) -> LoadResult:
    """Solutions with step labels from ``path`` in ``format`` (see the module docstring)."""
    parsers = {"prm800k": _prm800k, "math_shepherd": _math_shepherd}
    if format not in parsers:
        raise ValueError(f"step-label format must be one of {STEP_LABEL_FORMATS}, got {format!r}")
    return _load(path, parsers[format], on_error=on_error, limit=limit, split=split)


def step_judge_pairs(solutions: list[StepLabelledSolution], template: str = "genprm_step_judge") -> list[tuple[str, str]]:
    """One (prompt, target) pair per step: the judge's prompt for that step and " **SCORE:** s"."""
    return [(render_step_judge(template, s.question, list(s.steps), i), f" **SCORE:** {label}")
            for s in solutions for i, label in enumerate(s.labels)]


def step_judge_examples(path, format: str, on_error: str = "raise", *, split: str | None = None,
                        template: str = "genprm_step_judge") -> LoadResult:
    """The `step_judge_pairs` of a step-labelled file as examples (question = the judge's
    prompt, solution = its target, answer = the label), with the file's skipped-row counts."""
    loaded = load_step_labelled(path, format, on_error, split=split)
    examples = [TaskExample(id=f"{s.id}-step{i + 1}", question=prompt, answer=str(label), solution=target, source=format)
                for s in loaded for i, (label, (prompt, target)) in
                enumerate(zip(s.labels, step_judge_pairs([s], template)))]
    return LoadResult(examples, loaded.skipped, loaded.errors)
