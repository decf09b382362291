"""Training and held-out items of the zoo checkpoints, built from the synthetic task (pure).

Five tasks, one prompt template each:

- ``r1``: the GRPO policy. Target `format_r1_solution` (scored by `r1_zero_reward_fn`) for a
  ``1 - untagged_fraction`` share of the examples, and for the rest the same steps ending in a
  plain ``</think> The answer is N.``, which the r1 reward scores 0. The policy then samples both
  styles at temperature 1, so GRPO has something it can visibly learn from the reward alone.
- ``steps``: the base of the Critique-RL actor; target ``" " + format_steps_solution``.
- ``critic``: the Critique-RL critic, over a response that is correct half of the time and
  corrupted (`corrupt_steps`) otherwise; target `critique_text`. Each step sentence carries the
  critic's own recomputation and a last-digit comparison; the recomputed value's digits and the
  comparison's outcome token are weighted ``mark_weight`` times in the SFT loss. Without the
  weights the tiny critic learns every token of the critique except the verdict; with only the
  outcome weighted (800 steps on the learner group) it copied the response's value into its
  "recomputation", found every digit "same" and said "Correct" to everything.
- ``refiner``: the frozen Critique-RL actor: first attempts plus refinements in which the actor
  trusts the critique's final verdict (see `refinement_example`), so that a critic that
  discriminates better makes its refinements better.
- ``genprm``: CDRA's generative process reward model (Pers-GenPRM). One item judges one step of
  a solution that is right, carries an arithmetic slip (`corrupt_steps`) or starts a step from a
  wrong value (`slip_input`): the two mistakes the tiny `steps` policy makes (at T 0.5, 81 and 24
  of its 200 sampled solutions on held-out problems, by `judge_steps`). Target
  `step_judgement_text`, whose key tokens (`judgement_key_offsets`) are weighted ``mark_weight``
  times.

- ``sr_r1``: the SR-R1 policy, which answers and judges its own pairs. Half the items answer in
  the SR-R1 format (`format_sr_r1_solution`; a ``untagged_fraction`` share without answer tags,
  which the accuracy and format terms score 0); half judge a pair of a right tagged solution and
  a loser (a carried arithmetic slip, `corrupt_steps`, or the right steps untagged), shown in a
  random order. The judge target (`pair_judgement_text`) solves the question, reads each
  response's answer, marks each right or wrong and names the winner; the marks and the winner's
  letter are weighted ``mark_weight`` times.
  A verdict the 2-layer model must reach in one token after reading two responses is beyond it;
  solving first turns judging into its answering skill plus a lookup.

Every target is followed by the tokenizer's EOS in training, so generation stops without stop
strings (r1 also stops at ``</answer>``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cdra.data.prompts import render_pair_judge, render_prompt, render_step_judge
from cdra.data.synthetic import (
    ArithmeticProblem,
    SyntheticConfig,
    comparison_mark_offsets,
    corrupt_steps,
    critique_text,
    format_r1_solution,
    format_sr_r1_solution,
    format_steps_solution,
    judge_steps,
    judgement_key_offsets,
    parse_steps,
    recomputation_offsets,
    slip_input,
    step_judgement_text,
    step_locally_correct,
)
from cdra.models.tiny import TinyModelConfig
from cdra.rewards import extract_gsm8k_answer, parse_final_verdict, parse_prm_score, parse_winner, r1_zero_reward_fn
from cdra.rewards.elo import sr_r1_accuracy, sr_r1_answer
from cdra.rewards.verdict import FINAL_VERDICT_PREFIX

Task = Literal["r1", "steps", "critic", "refiner", "genprm", "sr_r1"]
TASKS: tuple[str, ...] = ("r1", "steps", "critic", "refiner", "genprm", "sr_r1")

# Shared by every checkpoint so the actor, the critic and the GRPO policy see the same problems.
DEFAULT_MODEL = TinyModelConfig(hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=512)
DEFAULT_SYNTHETIC = SyntheticConfig(num_steps=2, max_operand=9, ops=("+", "-"), max_value=99)

PROMPTS = {"r1": "r1_short", "steps": "critique_rl_inference_short", "critic": "critique_rl_critique_short",
           "refine": "critique_rl_refine_short", "genprm": "genprm_step_judge_short", "sr_r1": "sr_r1_short",
           "sr_r1_judge": "sr_r1_judge_solve"}
SR_R1_JUDGE_SHARE = 0.5  # of the sr_r1 items
R1_STOP = "</answer>"


@dataclass(frozen=True)
class SFTItem:
    """A (prompt, target) pair; ``emphasis``: character offsets in ``target`` whose token gets
    the SFT loss weight of the build (the critic's comparison outcomes); ``label``: the oracle
    of a critic item (was the critiqued response correct) or of a refiner item (the attempt)."""

    problem: ArithmeticProblem
    prompt: str
    target: str
    emphasis: tuple[int, ...] = ()
    label: bool | None = None


def r1_item(problem: ArithmeticProblem, tagged: bool = True) -> SFTItem:
    prompt = render_prompt(PROMPTS["r1"], question=problem.question)
    target = format_r1_solution(problem)
    if not tagged:  # the same steps with the answer outside <answer> tags: r1 reward 0
        target = f"{target.split(' </think>')[0]} </think> The answer is {problem.answer}."
    return SFTItem(problem, prompt, target)


def steps_item(problem: ArithmeticProblem) -> SFTItem:
    prompt = render_prompt(PROMPTS["steps"], question=problem.question)
    return SFTItem(problem, prompt, " " + format_steps_solution(problem))


def critic_item(problem: ArithmeticProblem, corrupt: bool, rng: random.Random) -> SFTItem:
    if corrupt:
        steps, labels = corrupt_steps(problem, rng)
    else:
        steps, labels = problem.steps, judge_steps(problem, problem.steps)
    response = format_steps_solution(problem, steps=steps)
    prompt = render_prompt(PROMPTS["critic"], question=problem.question, response=response)
    target = " " + critique_text(problem, steps, labels)
    emphasis = sorted(comparison_mark_offsets(target) + recomputation_offsets(target))
    return SFTItem(problem, prompt, target, tuple(emphasis), not corrupt)


def genprm_item(problem: ArithmeticProblem, rng: random.Random, variant: str, first_wrong: bool) -> SFTItem:
    """One step judgement over a ``variant`` ("right", "arithmetic" or "input") solution: the
    first wrong step if ``first_wrong`` (a right solution has none: a random step), else a
    random step. ``label``: is the judged step locally correct (`step_locally_correct`)."""
    if variant == "right":
        steps = problem.steps
    elif variant == "arithmetic":
        steps = corrupt_steps(problem, rng)[0]
    elif variant == "input":
        steps = slip_input(problem, rng)[0]
    else:
        raise ValueError(f"unknown genprm variant {variant!r}")
    local = [step_locally_correct(problem, steps, i) for i in range(len(steps))]
    i = local.index(False) if first_wrong and False in local else rng.randrange(len(steps))
    texts = format_steps_solution(problem, steps=steps).split("\n")
    texts[len(steps) - 1] += " " + texts.pop()  # the answer line belongs to the last step (`split_steps`)
    prompt = render_step_judge(PROMPTS["genprm"], problem.question, texts, i)
    target = " " + step_judgement_text(problem, steps, i)
    return SFTItem(problem, prompt, target, tuple(judgement_key_offsets(target)), local[i])


def sr_r1_answer_item(problem: ArithmeticProblem, tagged: bool = True) -> SFTItem:
    prompt = render_prompt(PROMPTS["sr_r1"], question=problem.question)
    return SFTItem(problem, prompt, format_sr_r1_solution(problem, tagged=tagged))


def pair_judgement_text(problem: ArithmeticProblem, response_a: str, response_b: str, winner: str) -> str:
    """" Step 1: 3+4=7. Step 2: 7*2=14. Answer 14. A: 14 right. B: 15 wrong.\\nWinner: response A":
    the judge's own solution, each response's tagged answer ("none" without tags) checked against
    it, the verdict. (Without the right/wrong marks the build copied both answers faithfully and
    then named the wrong letter on 3 of 10 held-out pairs.)"""
    body = " ".join(f"Step {i}: {step.text()}." for i, step in enumerate(problem.steps, start=1))
    a, b = (sr_r1_answer(r) or "none" for r in (response_a, response_b))
    mark = {x: "right" if x == problem.answer else "wrong" for x in (a, b)}
    return f" {body} Answer {problem.answer}. A: {a} {mark[a]}. B: {b} {mark[b]}.\nWinner: response {winner}"


def judgement_mark_offsets(target: str) -> tuple[int, ...]:
    """The first letter of each right/wrong mark and the verdict letter of a pair judgement."""
    marks = [m.start() for m in re.finditer(r"\b(?:right|wrong)\.", target)]
    return (*marks, len(target) - 1)


def sr_r1_judge_item(problem: ArithmeticProblem, rng: random.Random, right_first: bool) -> SFTItem:
    """A pair of the right tagged solution and a loser (70 %: a carried slip; else the right
    steps untagged); ``label``: the right one is shown as A."""
    right = format_sr_r1_solution(problem)
    loser = (format_sr_r1_solution(problem, corrupt_steps(problem, rng)[0]) if rng.random() < 0.7
             else format_sr_r1_solution(problem, tagged=False))
    a, b = (right, loser) if right_first else (loser, right)
    target = pair_judgement_text(problem, a, b, "A" if right_first else "B")
    prompt = render_pair_judge(PROMPTS["sr_r1_judge"], problem.question, a, b)
    return SFTItem(problem, prompt, target, judgement_mark_offsets(target), right_first)


def _genprm_variant(rng: random.Random) -> str:
    u = rng.random()
    return "right" if u < 0.4 else "arithmetic" if u < 0.75 else "input"


def set_final_verdict(critique: str, correct: bool) -> str:
    head, _, _ = critique.rpartition(FINAL_VERDICT_PREFIX)
    return f"{head}{FINAL_VERDICT_PREFIX} {'Correct' if correct else 'Wrong'}"


def refinement_item(problem: ArithmeticProblem, rng: random.Random, attempt_correct: bool, verdict_right: bool) -> SFTItem:
    """A refinement prompt (question, attempt, critique) and the target of an actor that trusts
    the verdict: "Correct" -> repeat the attempt; "Wrong" on a wrong attempt -> the correct
    solution (the critique states the true value of the first wrong step); "Wrong" on a correct
    attempt -> a corrupted solution (the c->i transition)."""
    if attempt_correct:
        steps, labels = problem.steps, judge_steps(problem, problem.steps)
    else:
        steps, labels = corrupt_steps(problem, rng)
    attempt = format_steps_solution(problem, steps=steps)
    critique = critique_text(problem, steps, labels)  # its final verdict is the right one
    says_correct = attempt_correct == verdict_right
    if not verdict_right:
        critique = set_final_verdict(critique, says_correct)
    if says_correct:
        target = attempt
    elif attempt_correct:
        target = format_steps_solution(problem, steps=corrupt_steps(problem, rng)[0])
    else:
        target = format_steps_solution(problem)
    prompt = render_prompt(PROMPTS["refine"], question=problem.question, response=attempt, critique=critique)
    return SFTItem(problem, prompt, " " + target, label=attempt_correct)


def training_items(task: Task, problems: Sequence[ArithmeticProblem], seed: int, *, untagged_fraction: float = 0.5,
                   refine_fraction: float = 0.9, flipped_verdict_fraction: float = 0.25) -> list[SFTItem]:
    """The SFT items of ``task`` over ``problems``, drawn with a seeded RNG.

    r1: a ``untagged_fraction`` share untagged; critic: half corrupted; refiner: a
    ``refine_fraction`` share of refinements (attempts correct half of the time, the verdict
    flipped for a ``flipped_verdict_fraction`` share, so the actor follows the verdict rather
    than its own judgement), the rest first attempts so that skill is kept."""
    rng = random.Random(f"cdra-zoo-{task}:{seed}")
    if task == "r1":
        return [r1_item(p, tagged=rng.random() >= untagged_fraction) for p in problems]
    if task == "steps":
        return [steps_item(p) for p in problems]
    if task == "critic":
        return [critic_item(p, rng.random() < 0.5, rng) for p in problems]
    if task == "refiner":
        out = []
        for p in problems:
            if rng.random() < refine_fraction:
                out.append(refinement_item(p, rng, rng.random() < 0.5, rng.random() >= flipped_verdict_fraction))
            else:
                out.append(steps_item(p))
        return out
    if task == "genprm":
        return [genprm_item(p, rng, _genprm_variant(rng), rng.random() < 0.7) for p in problems]
    if task == "sr_r1":
        return [sr_r1_judge_item(p, rng, rng.random() < 0.5) if rng.random() < SR_R1_JUDGE_SHARE
                else sr_r1_answer_item(p, tagged=rng.random() >= untagged_fraction) for p in problems]
    raise ValueError(f"unknown zoo task {task!r}; expected one of {TASKS}")


def heldout_items(task: Task, problems: Sequence[ArithmeticProblem], seed: int = 0) -> list[SFTItem]:
    """Evaluation items: critic responses alternate correct / corrupted (chance Acc@Dis 50 %);
    the refiner is evaluated on its first attempts (`refinement_probe` measures refinements)."""
    if task == "critic":
        rng = random.Random(f"cdra-zoo-critic-eval:{seed}")
        return [critic_item(p, i % 2 == 1, rng) for i, p in enumerate(problems)]
    if task == "genprm":  # right steps of right solutions alternate with first wrong steps
        rng = random.Random(f"cdra-zoo-genprm-eval:{seed}")
        return [genprm_item(p, rng, "right" if i % 2 == 0 else ("arithmetic", "input")[i // 2 % 2], True)
                for i, p in enumerate(problems)]
    if task == "r1":
        return [r1_item(p) for p in problems]
    if task == "sr_r1":  # tagged answers alternate with judged pairs, the right one first every other pair
        rng = random.Random(f"cdra-zoo-sr_r1-eval:{seed}")
        return [sr_r1_answer_item(p) if i % 2 == 0 else sr_r1_judge_item(p, rng, i % 4 == 1) for i, p in enumerate(problems)]
    return [steps_item(p) for p in problems]


def score(task: Task, item: SFTItem, response: str) -> tuple[float, float]:
    """(correct, well formatted) of one generated response to a held-out item."""
    if task == "r1":
        if R1_STOP in response:
            response = response[: response.index(R1_STOP) + len(R1_STOP)]
        r = r1_zero_reward_fn(response, item.problem.answer, fast=True)
        return r["reward"], r["format_reward"]
    if task == "critic":
        verdict = parse_final_verdict(response)
        return float(verdict is not None and verdict == item.label), float(verdict is not None)
    if task == "sr_r1":
        if item.label is None:  # an answer
            response = response[: response.index(R1_STOP) + len(R1_STOP)] if R1_STOP in response else response
            r = sr_r1_accuracy(response, item.problem.answer)
            return r["reward"], r["format_reward"]
        winner = parse_winner(response)
        return float(winner == ("A" if item.label else "B")), float(winner is not None)
    if task == "genprm":
        s = parse_prm_score(response)
        return float(s is not None and (s > 0) == item.label), float(s is not None)
    return float(extract_gsm8k_answer(response) == item.problem.answer), float("The answer is" in response)


def heldout_metrics(task: Task, items: Sequence[SFTItem], responses: Sequence[str]) -> dict[str, float]:
    """accuracy (r1 reward / answer correct / Acc@Dis / step-judgement accuracy) and format rate;
    the critic and the genprm also get acc_on_correct and acc_on_wrong (their mean is the
    balanced accuracy)."""
    scores = [score(task, item, r) for item, r in zip(items, responses, strict=True)]
    out = {"accuracy": sum(s[0] for s in scores) / len(scores), "format_rate": sum(s[1] for s in scores) / len(scores),
           "num_problems": float(len(scores))}
    if task == "sr_r1":  # accuracy: of the answers; judge_agreement: of the pair verdicts
        answers = [s for item, s in zip(items, scores) if item.label is None]
        pairs = [(item, s) for item, s in zip(items, scores) if item.label is not None]
        return {"accuracy": sum(s[0] for s in answers) / max(1, len(answers)),
                "format_rate": sum(s[1] for s in answers) / max(1, len(answers)),
                "judge_agreement": sum(s[0] for _, s in pairs) / max(1, len(pairs)),
                "judge_parsed": sum(s[1] for _, s in pairs) / max(1, len(pairs)),
                "num_problems": float(len(answers)), "num_pairs": float(len(pairs))}
    if task in ("critic", "genprm"):
        for name, label in (("acc_on_correct", True), ("acc_on_wrong", False)):
            picked = [s[0] for item, s in zip(items, scores) if item.label == label]
            out[name] = sum(picked) / max(1, len(picked))
    return out


def reference_critique(problem: ArithmeticProblem, attempt: str) -> str | None:
    """The synthetic task's own critique of a generated attempt (None if it has no steps)."""
    steps = parse_steps(attempt)
    if not steps:
        return None
    return critique_text(problem, steps, judge_steps(problem, steps), final_answer=extract_gsm8k_answer(attempt) or "")


def refinement_prompts(problems: Sequence[ArithmeticProblem], attempts: Sequence[str], verdict: bool | None) -> list[str]:
    """Refinement prompts after the reference critique of each attempt, its final verdict kept
    (``None``) or forced to "Correct" (True) / "Wrong" (False)."""
    prompts = []
    for p, a in zip(problems, attempts, strict=True):
        critique = reference_critique(p, a) or f"{FINAL_VERDICT_PREFIX} Wrong"
        if verdict is not None:
            critique = set_final_verdict(critique, verdict)
        prompts.append(render_prompt(PROMPTS["refine"], question=p.question, response=a.strip(), critique=critique))
    return prompts


def answer_accuracy(problems: Sequence[ArithmeticProblem], responses: Sequence[str]) -> float:
    return sum(extract_gsm8k_answer(r) == p.answer for p, r in zip(problems, responses, strict=True)) / len(problems)
