"""Named prompt templates.

Every template is a ``str.format`` string over named fields; ``PROMPTS`` maps names to
:class:`PromptTemplate` and :func:`render_prompt` fills one in. Extra fields are ignored, so
``render_prompt(name, **dataclasses.asdict(example))`` works; a missing field or an unknown
name raises ``ValueError`` saying what is valid.

Fields used: ``question``; ``response`` (a previous answer); ``critique``; ``previous_steps``
and ``current_step`` (GenPRM); ``response_a`` and ``response_b`` (SR-R1 judge).

The ``*_short`` templates are compact fixed strings for the tiny character-level default
model. Completions after them are expected to start with a space (``"Q: ...\\nA:"`` is
followed by ``" Step 1: ..."``).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from cdra.data.example import TaskExample


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    template: str
    description: str = ""
    # Stop strings a generator should use with this prompt (kept in the output).
    stop: tuple[str, ...] = ()

    @property
    def fields(self) -> tuple[str, ...]:
        names = []
        for _, field_name, _, _ in string.Formatter().parse(self.template):
            if field_name is not None and field_name not in names:
                names.append(field_name)
        return tuple(names)

    def render(self, **fields) -> str:
        missing = [f for f in self.fields if f not in fields]
        if missing:
            raise ValueError(
                f"prompt {self.name!r} needs fields {list(self.fields)}; missing {missing}"
            )
        return self.template.format(**{f: fields[f] for f in self.fields})

    def __call__(self, example: TaskExample | None = None, **fields) -> str:
        """Render from an example's ``question`` plus any other fields."""
        if example is not None:
            fields.setdefault("question", example.question)
        return self.render(**fields)


R1_ZERO = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant "
    "solves it. The Assistant first thinks about the reasoning process in the mind and then "
    "provides the User with the answer. The reasoning process is enclosed within <think> "
    "</think> and answer is enclosed within <answer> </answer> tags, respectively, i.e., "
    "<think> reasoning process here </think> <answer> answer here </answer>.\n"
    "User: {question}\n"
    "Assistant: <think>"
)

R1_SHORT = "User: {question}\nAssistant: <think>"

QUESTION_ONLY = "{question}"

CDRA_STEPS = (
    "Solve the following problem step by step. Write each step on its own line as "
    '"Step 1: ...", "Step 2: ...", and so on, and end with "The answer is N." where N is the '
    "final answer.\n\n"
    "Problem: {question}\n"
    "Solution:"
)

CDRA_STEPS_SHORT = "Q: {question}\nA:"

CRITIQUE_RL_INFERENCE = (
    "Answer the following question. Reason step by step, one step per line, and finish with "
    '"The answer is" followed by the final answer.\n\n'
    "Question: {question}\n"
    "Answer:"
)

CRITIQUE_RL_CRITIQUE = (
    "You are a critic. Below are a question and a response that solves it step by step. "
    "Check every step of the response. For each step write three lines:\n"
    "Step sentence: <the step>\n"
    "Correctness of the step: Correct or Wrong\n"
    "Explanation: <why>\n"
    "After the last step, write one line:\n"
    "Correctness of the final answer: Correct or Wrong\n\n"
    "Question: {question}\n\n"
    "Response: {response}\n\n"
    "Critique:"
)

CRITIQUE_RL_REFINE = (
    "Below are a question, a previous response to it, and a critique of that response. "
    "Using the critique, write an improved response. Reason step by step, one step per line, "
    'and finish with "The answer is" followed by the final answer.\n\n'
    "Question: {question}\n\n"
    "Previous response: {response}\n\n"
    "Critique: {critique}\n\n"
    "Refined response:"
)

CRITIQUE_RL_INFERENCE_SHORT = "Q: {question}\nA:"
CRITIQUE_RL_CRITIQUE_SHORT = "Q: {question}\nA: {response}\nCritique:"
CRITIQUE_RL_REFINE_SHORT = "Q: {question}\nA: {response}\nCritique: {critique}\nRevised A:"

GENPRM_STEP_JUDGE = (
    "You are a step-level judge of mathematical reasoning. Given a question, the previous "
    "steps of a solution, and its current step, decide whether the current step is correct "
    "and moves the solution toward the right answer. First explain your judgement after "
    '"**Reasoning:**", then give a score between -1 and 1 after "**SCORE:**" '
    "(1: correct and useful, 0: unclear or unhelpful, -1: wrong).\n\n"
    "Question: {question}\n\n"
    "Previous steps:\n{previous_steps}\n\n"
    "Current step:\n{current_step}\n\n"
    "Judgement:"
)

GENPRM_STEP_JUDGE_SHORT = "Q: {question}\nPrev: {previous_steps}\nStep: {current_step}\nJudge:"

SR_R1_JUDGE = (
    "You are judging two responses to the same question. Compare them on six criteria:\n"
    "1. Correctness: is the final answer right and is the reasoning valid?\n"
    "2. Completeness: does the response address every part of the question?\n"
    "3. Explanation: are the steps explained clearly enough to follow?\n"
    "4. Notation: is mathematical notation used correctly and consistently?\n"
    "5. Quality: is the response well organized and free of errors and filler?\n"
    "6. Relevance: does the response stay on the question?\n"
    "Weigh the criteria, with correctness first, and decide which response is better. "
    'End with exactly one line, "Winner: response A" or "Winner: response B".\n\n'
    "Question: {question}\n\n"
    "Response A:\n{response_a}\n\n"
    "Response B:\n{response_b}\n\n"
    "Evaluation:"
)

SR_R1_JUDGE_SHORT = "Q: {question}\nA: {response_a}\nB: {response_b}\nWinner: response"

# The tiny SR-R1 policy's own prompts: it answers in the SR-R1 format (the completion starts with
# "<think>\n", so the format reward reads the completion alone) and judges a pair by solving the
# question, reading each response's answer and naming the winner ("Winner: response A|B").
SR_R1_SHORT = "User: {question}\nAssistant: "
SR_R1_JUDGE_SOLVE = "Q: {question}\nA: {response_a}\nB: {response_b}\nJudge:"


def _t(name: str, template: str, description: str, stop: tuple[str, ...] = ()) -> PromptTemplate:
    return PromptTemplate(name=name, template=template, description=description, stop=stop)


PROMPTS: dict[str, PromptTemplate] = {
    t.name: t
    for t in (
        _t("r1_zero", R1_ZERO, "CS336 r1_zero: <think> reasoning </think> <answer> ... </answer>", ("</answer>",)),
        _t("r1_short", R1_SHORT, "r1 answer format without the preamble (tiny models)", ("</answer>",)),
        _t("question_only", QUESTION_ONLY, "the question as is"),
        _t("cdra_steps", CDRA_STEPS, "Step 1..N answer ending 'The answer is N.' (CDRA policy)"),
        _t("cdra_steps_short", CDRA_STEPS_SHORT, "compact CDRA policy prompt (tiny models)"),
        _t("critique_rl_inference", CRITIQUE_RL_INFERENCE, "Critique-RL actor: first attempt"),
        _t("critique_rl_critique", CRITIQUE_RL_CRITIQUE, "Critique-RL critic: step-wise critique"),
        _t("critique_rl_refine", CRITIQUE_RL_REFINE, "Critique-RL actor: refinement given a critique"),
        _t("critique_rl_inference_short", CRITIQUE_RL_INFERENCE_SHORT, "compact Critique-RL first attempt"),
        _t("critique_rl_critique_short", CRITIQUE_RL_CRITIQUE_SHORT, "compact Critique-RL critique"),
        _t("critique_rl_refine_short", CRITIQUE_RL_REFINE_SHORT, "compact Critique-RL refinement"),
        _t("genprm_step_judge", GENPRM_STEP_JUDGE, "Pers-GenPRM step judge: **Reasoning:** then **SCORE:** s"),
        _t("genprm_step_judge_short", GENPRM_STEP_JUDGE_SHORT, "compact step judge (tiny models)"),
        _t("sr_r1_judge", SR_R1_JUDGE, "SR-R1 pairwise judge, 6-point rubric, 'Winner: response A|B'"),
        _t("sr_r1_judge_short", SR_R1_JUDGE_SHORT, "compact pairwise judge; completion is ' A' or ' B'"),
        _t("sr_r1_short", SR_R1_SHORT, "SR-R1 answer format <think>\\n...\\n</think>\\n<answer>\\n...\\n</answer> (tiny models)",
           ("</answer>",)),
        _t("sr_r1_judge_solve", SR_R1_JUDGE_SOLVE, "compact pairwise judge that solves, reads both answers, 'Winner: response A|B'"),
    )
}


def get_prompt(name: str) -> PromptTemplate:
    try:
        return PROMPTS[name]
    except KeyError:
        raise ValueError(f"unknown prompt {name!r}; valid names: {sorted(PROMPTS)}") from None


def render_prompt(name: str, **fields) -> str:
    """Fill the named template with ``fields`` (extra fields are ignored)."""
    return get_prompt(name).render(**fields)


def render_step_judge(name: str, question: str, steps: list[str], index: int) -> str:
    """A step judge's prompt for step ``index`` of a solution split into ``steps`` (their texts,
    e.g. `cdra.rewards.split_steps` spans): the steps before it on one line ("none" for the
    first), then the step itself, whitespace runs collapsed to one space."""
    previous = " ".join(_one_line(s) for s in steps[:index]) or "none"
    return render_prompt(name, question=question, previous_steps=previous, current_step=_one_line(steps[index]))


def render_pair_judge(name: str, question: str, response_a: str, response_b: str) -> str:
    """A pairwise judge's prompt, each response on one line (whitespace runs collapsed)."""
    return render_prompt(name, question=question, response_a=_one_line(response_a), response_b=_one_line(response_b))


def _one_line(text: str) -> str:
    """Whitespace runs (newlines included) collapsed to one space."""
    return " ".join(text.split())
