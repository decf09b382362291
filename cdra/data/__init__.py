"""Datasets, the synthetic task, prompt templates and chat templates.

Importing this package pulls in neither ``datasets`` nor ``pyarrow``; the loaders import them
when a file needs them.
"""

from cdra.data.chat import CHAT_TEMPLATES, format_chat, has_chat_template
from cdra.data.example import CHOICE_LETTERS, KINDS, TaskExample
from cdra.data.loaders import (
    FORMATS,
    DataError,
    DatasetSpec,
    LoadResult,
    boxed_answer,
    load_aqua,
    load_dataset_spec,
    load_gsm8k,
    load_math,
    load_table,
)
from cdra.data.prompts import PROMPTS, PromptTemplate, get_prompt, render_prompt
from cdra.data.synthetic import (
    ArithmeticProblem,
    ArithmeticStep,
    SyntheticConfig,
    comparison_mark_offsets,
    corrupt_steps,
    critique_text,
    format_r1_solution,
    format_steps_solution,
    judge_steps,
    make_examples,
    make_mcq_examples,
    make_problem,
    make_problems,
    parse_steps,
    split_of_question,
    step_check,
    to_example,
)

__all__ = [
    "CHAT_TEMPLATES",
    "CHOICE_LETTERS",
    "FORMATS",
    "KINDS",
    "PROMPTS",
    "ArithmeticProblem",
    "ArithmeticStep",
    "DataError",
    "DatasetSpec",
    "LoadResult",
    "PromptTemplate",
    "SyntheticConfig",
    "TaskExample",
    "boxed_answer",
    "comparison_mark_offsets",
    "corrupt_steps",
    "critique_text",
    "format_chat",
    "format_r1_solution",
    "format_steps_solution",
    "get_prompt",
    "has_chat_template",
    "judge_steps",
    "load_aqua",
    "load_dataset_spec",
    "load_gsm8k",
    "load_math",
    "load_table",
    "make_examples",
    "make_mcq_examples",
    "make_problem",
    "make_problems",
    "parse_steps",
    "step_check",
    "render_prompt",
    "split_of_question",
    "to_example",
]
