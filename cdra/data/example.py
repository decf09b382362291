"""The one record type every dataset in cdra produces."""

from __future__ import annotations

from dataclasses import dataclass

# Answer-extraction kinds (how a grader reads the answer out of a response):
#   "gsm8k": a number (first after "The answer is", else the last number)
#   "math":  \boxed{...} content, normalized
#   "aqua" / "mcq": an option letter A-J
KINDS: tuple[str, ...] = ("gsm8k", "math", "aqua", "mcq")

CHOICE_LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class TaskExample:
    """One question with its gold answer.

    ``answer`` is the ground truth as a string (a number for "gsm8k", the boxed content for
    "math", a letter for "aqua"/"mcq"). ``solution`` is a reference worked solution when the
    source has one (used for SFT). ``choices`` holds the option texts of a multiple-choice
    question, without their letters: ``choices[i]`` is option ``CHOICE_LETTERS[i]``. The
    question text itself already shows the options, so prompts need nothing but ``question``.
    """

    id: str
    question: str
    answer: str
    solution: str | None = None
    choices: tuple[str, ...] | None = None
    source: str = ""
    kind: str = "gsm8k"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"TaskExample.kind must be one of {KINDS}, got {self.kind!r}")
        if self.choices is not None and not isinstance(self.choices, tuple):
            object.__setattr__(self, "choices", tuple(self.choices))
