"""The Critique-RL actor of the embedded default: the `steps` warm start taught to refine.

The `steps` warm start only writes first attempts; given a refinement prompt it writes nothing
usable, so no critique could ever help it and Stage II would have no signal. This continues its
SFT on a mix of first attempts and refinements, where the actor trusts the critique's final
verdict, as the instruction-tuned actors of the paper largely do:

- verdict "Correct": the refined answer repeats the attempt;
- verdict "Wrong" on a wrong attempt: the refined answer is the correct solution (the
  critique's explanation states the true value of the first wrong step);
- verdict "Wrong" on a correct attempt: the refined answer is a corrupted solution (the actor
  "fixes" what was right: the c->i transition).

A quarter of the training critiques carry the flipped verdict, so the actor follows the verdict
rather than its own judgement: a critic that discriminates better makes its refinements better.

Calibration (greedy, 256 held-out problems, the probe of
`tests/test_critique_rl.py::test_refiner_rewards_a_critic_that_discriminates`):
after 800 SFT steps its first attempts are 53.9 % correct; after reference critiques its
refinements are 92.2 % correct (it keeps 94.9 % of correct attempts and fixes 89.0 % of wrong
ones), with every verdict forced to "Correct" 53.9 % (fixes 5.9 %), forced to "Wrong" 71.9 %
(keeps 57.2 %): a right "Wrong" is worth 83 points of fix rate, a wrong one costs 38 points of
keep rate, so each point of discrimination a critic gains moves its refinements. After 400
steps (the earlier default) the same probe gave 53.9 / 46.5 / 34.0 % from first attempts at
50.4 %: it kept only 73 % of correct attempts after a "Correct" and fixed 35 % of wrong ones
after a "Wrong" on held-out questions, so a critic's better verdicts moved few refinements and
Stage II did not visibly raise held-out accuracy after refinement. 90 % refinement examples:
with 60 % and 250 steps it broke a third of correct attempts even after a right "Correct"
critique; with 60 % and 500 steps its first attempts became 90 % correct.
Cached like every warm start (directory keyed by the config digest and the base model).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cdra.data.prompts import render_prompt
from cdra.data.synthetic import ArithmeticProblem, corrupt_steps, critique_text, format_steps_solution, judge_steps, make_problems
from cdra.models.tiny import cache_root, save_atomically
from cdra.models.warmstart import (
    WarmStartConfig,
    WarmStartExample,
    _train,
    evaluate_accuracy,
    task_example,
    torch_threads,
    warm_start,
    write_record,
)
from cdra.rewards.verdict import FINAL_VERDICT_PREFIX

__all__ = ["RefinerConfig", "refinement_example", "refiner_examples", "warm_start_refiner"]

REFINE_PROMPT = "critique_rl_refine_short"


@dataclass(frozen=True)
class RefinerConfig:
    base: WarmStartConfig = field(default_factory=lambda: WarmStartConfig(task="steps"))
    steps: int = 800
    batch_size: int = 32
    lr: float = 1e-3
    refine_fraction: float = 0.9  # the rest are first attempts, so that skill is kept
    flipped_verdict_fraction: float = 0.25
    num_examples: int = 2000
    eval_problems: int = 200
    seed: int = 0
    threads: int = 1  # one intra-op thread: two oversubscribe the shared 2-core machine

    def __post_init__(self) -> None:
        if self.base.task != "steps":
            raise ValueError(f"RefinerConfig.base must be a 'steps' warm start, got task {self.base.task!r}")
        for name in ("refine_fraction", "flipped_verdict_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"RefinerConfig.{name} must be in [0, 1], got {getattr(self, name)!r}")
        for name in ("steps", "batch_size", "num_examples", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"RefinerConfig.{name} must be >= 1, got {getattr(self, name)!r}")

    def digest(self) -> str:
        """Hash of the config (``threads`` only changes speed) and of a sample training example,
        so a change to the refinement prompt or critique format never reuses a stale cache."""
        fields = dataclasses.asdict(self)
        del fields["threads"]
        fields["base"] = self.base.digest()
        sample = refinement_example(make_problems(1, 0, self.base.synthetic, "train")[0], random.Random(0), False, True)
        fields["sample"] = [sample.prompt, sample.target]
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _set_final_verdict(critique: str, correct: bool) -> str:
    head, _, _ = critique.rpartition(FINAL_VERDICT_PREFIX)
    return f"{head}{FINAL_VERDICT_PREFIX} {'Correct' if correct else 'Wrong'}"


def refinement_example(problem: ArithmeticProblem, rng: random.Random, attempt_correct: bool, verdict_right: bool) -> WarmStartExample:
    """One (refinement prompt, target) pair; see the module docstring for the target rule."""
    if attempt_correct:
        steps, labels = problem.steps, judge_steps(problem, problem.steps)
    else:
        steps, labels = corrupt_steps(problem, rng)
    attempt = format_steps_solution(problem, steps=steps)
    critique = critique_text(problem, steps, labels)  # its final verdict is the right one
    says_correct = attempt_correct == verdict_right
    if not verdict_right:
        critique = _set_final_verdict(critique, says_correct)
    if says_correct:
        target = attempt
    elif attempt_correct:
        target = format_steps_solution(problem, steps=corrupt_steps(problem, rng)[0])
    else:
        target = format_steps_solution(problem)
    prompt = render_prompt(REFINE_PROMPT, question=problem.question, response=attempt, critique=critique)
    return WarmStartExample(problem, prompt, " " + target, attempt_correct)


def refiner_examples(problems: list[ArithmeticProblem], config: RefinerConfig) -> list[WarmStartExample]:
    rng = random.Random(f"cdra-refiner:{config.seed}")
    out = []
    for p in problems:
        if rng.random() < config.refine_fraction:
            out.append(refinement_example(p, rng, rng.random() < 0.5, rng.random() >= config.flipped_verdict_fraction))
        else:
            out.append(task_example("steps", p))
    return out


def warm_start_refiner(config: RefinerConfig = RefinerConfig(), root: Path | None = None) -> Path:
    """Train (or reuse) the refining actor; returns its HF model directory."""
    base = warm_start(config.base)
    target = (root or cache_root() / "warmstart") / f"actor-refine-{config.digest()}"
    if (target / "warmstart.json").exists():
        return target
    with torch_threads(config.threads):
        torch.manual_seed(config.seed)
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        problems = make_problems(config.num_examples, config.seed + 1, config.base.synthetic, "train")
        schedule = dataclasses.replace(config.base, steps=config.steps, batch_size=config.batch_size, lr=config.lr, seed=config.seed)
        started = time.perf_counter()
        losses, _ = _train(model, tokenizer, refiner_examples(problems, config), schedule)
        train_seconds = time.perf_counter() - started
        save_atomically(model, tokenizer, target)
        heldout = {}
        if config.eval_problems:
            heldout = evaluate_accuracy(target, "steps", make_problems(config.eval_problems, config.seed, config.base.synthetic, "test"))
    write_record(target, {"config": dataclasses.asdict(config), "base": str(base), "train_seconds": train_seconds,
                          "initial_loss": losses[0], "final_loss": losses[-1], "heldout_first_attempt": heldout})
    return target
