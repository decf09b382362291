"""Warm starts: a short plain-torch SFT of a fresh tiny model on the synthetic task.

RL from a random tiny model never sees a reward, so every embedded-default job starts from a
warm-started model instead: one that writes the task's format and gets some, not all, held-out
problems right, and samples diverse answers at temperature 1 (GRPO needs groups whose rewards
differ). Three tasks:

- ``r1``: the GRPO policy; prompt ``r1_short``, target `format_r1_solution` (scored by
  `r1_zero_reward_fn`) for a ``1 - untagged_fraction`` share of the examples, and for the rest
  the same steps ending in a plain ``</think> The answer is N.``, which the r1 reward scores 0
  (no ``<answer>`` tags). So the warm-started policy samples both styles (about half each at
  temperature 1) and GRPO has something it can visibly learn from the reward alone within
  minutes: to answer in the rewarded form. It does not improve the arithmetic itself within
  minutes: at temperature 1 about half of the rewarded samples reach the right answer through
  wrong steps, and from a single-style warm start every learning rate that moved the policy
  at all lowered its greedy accuracy.
- ``steps``: the frozen Critique-RL actor; prompt ``critique_rl_inference_short``, target
  ``" " + format_steps_solution`` (``... The answer is N.``).
- ``critic``: the Critique-RL critic; prompt ``critique_rl_critique_short`` over a response that
  is correct half of the time and corrupted (`corrupt_steps`) otherwise, target `critique_text`.
  Each step sentence carries the critic's own recomputation and a last-digit comparison
  (`step_check`) whose outcome token is weighted ``mark_weight`` times in the loss: without
  both, 100-700 SFT steps learned every token of the critique except the verdict (Acc@Dis
  0.50, always "Correct"). With them the comparison emerges within an 800-step schedule
  (greedy held-out Acc@Dis at step 350 / 460 / 490 / 600 / 800: 50 / 68.5 / 71.5 / 85.5 /
  99.5 %), and a critic trained to the end is as good as the reference critiques for the
  refiner, leaving RL nothing to gain. So the critic stops early (`stop_at_accuracy` 0.7 on
  the validation split): a critic that compares part of the time, which leaves Stage I
  something to sharpen. Where it stops depends on the build: at step 510 (held-out 96 % right
  on correct and 37 % on wrong responses) for the README's earlier figures, at step 600 (96 % /
  63 %) on the machine of the current ones, with the same code and seeds.

Every target ends with the tokenizer's EOS so a generator stops without stop strings. A warm
start is a cached preparation step: its directory is keyed by the config digest, and a second
call returns at once.

Calibration (2 shared CPU cores): `DEFAULT_STEPS` puts the r1 and steps SFT at 1-2 minutes
and the critic's (longer targets; its early stop came at step 510, 17 checks of ~5 s) at about
10 minutes, one thread each. The
accuracy rises steeply with steps (r1, single style: 225 steps 0.30, 400 steps 0.89, 800 steps
0.97 greedy held-out), so the defaults sit before that rise and leave room to learn.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal, Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cdra.algos import encode_without_special_tokens, log_probs_from_logits, masked_mean, tokenize_prompt_and_output
from cdra.data.prompts import render_prompt
from cdra.data.synthetic import (
    ArithmeticProblem,
    SyntheticConfig,
    comparison_mark_offsets,
    corrupt_steps,
    critique_text,
    format_r1_solution,
    format_steps_solution,
    judge_steps,
    make_problems,
)
from cdra.models.tiny import TinyModelConfig, build_tiny_model, cache_root, save_atomically
from cdra.rewards import extract_gsm8k_answer, parse_final_verdict, r1_zero_answer, r1_zero_reward_fn

__all__ = [
    "TASKS",
    "WarmStartConfig",
    "warm_start",
    "evaluate_accuracy",
    "evaluate_model",
    "task_example",
    "untagged_r1_example",
    "critic_responses",
]

Task = Literal["r1", "steps", "critic"]
TASKS: tuple[str, ...] = ("r1", "steps", "critic")

PROMPT_OF_TASK = {"r1": "r1_short", "steps": "critique_rl_inference_short", "critic": "critique_rl_critique_short"}
R1_STOP = "</answer>"

# Shared by every task so the actor, the critic and the GRPO policy see the same problems.
DEFAULT_MODEL = TinyModelConfig(hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=512)
DEFAULT_SYNTHETIC = SyntheticConfig(num_steps=2, max_operand=9, ops=("+", "-"), max_value=99)
# Calibrated SFT steps per task (see CALIBRATION above).
DEFAULT_STEPS = {"r1": 300, "steps": 250, "critic": 800}
# Calibrated early stops (see `WarmStartConfig.stop_at_accuracy`): the critic stops part-way
# through its 800-step schedule, once it discriminates somewhat but not yet fully.
DEFAULT_STOP_AT_ACCURACY = {"r1": 0.0, "steps": 0.0, "critic": 0.7}
# Where a task's SFT starts: the critic starts from the `steps` actor, which already computes
# the arithmetic its explanations need (from scratch it only learned to say "Correct").
DEFAULT_INIT = {"r1": "scratch", "steps": "scratch", "critic": "steps"}
Init = Literal["scratch", "steps"]


@dataclass(frozen=True)
class WarmStartConfig:
    """One warm start. ``steps=None`` and ``init=None`` pick the calibrated values of ``task``.

    ``init``: "scratch" trains the fresh `build_tiny_model(model)`; "steps" continues from the
    default `steps` warm start of the same model, synthetic task and seed (`base_config`).
    ``stop_at_accuracy`` (``None``: the task's calibrated value; 0: never): every
    ``stop_check_every`` steps the model is scored greedily on ``stop_check_problems``
    validation-split problems (`evaluate_model`) and training ends at the first check whose
    accuracy reaches it. The learning-rate schedule stays the one planned for ``steps``.
    """

    task: Task = "r1"
    model: TinyModelConfig = DEFAULT_MODEL
    synthetic: SyntheticConfig = DEFAULT_SYNTHETIC
    steps: int | None = None
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 10
    seed: int = 0
    init: Init | None = None
    num_examples: int = 2000
    untagged_fraction: float = 0.5  # r1 only: share of targets in the unrewarded style (see above)
    mark_weight: float = 20.0  # critic only: loss weight of each comparison outcome (see `_loss_weights`)
    stop_at_accuracy: float | None = None
    stop_check_every: int = 30
    stop_check_problems: int = 100
    eval_problems: int = 200
    eval_max_new_tokens: int = 0  # 0: enough for the task's longest target
    # One intra-op thread: on the shared 2-core machine two threads per process oversubscribe
    # the cores and a step ran 3-6x slower in wall time (see the calibration notes above).
    threads: int = 1

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"WarmStartConfig.task must be one of {TASKS}, got {self.task!r}")
        if self.steps is None:
            object.__setattr__(self, "steps", DEFAULT_STEPS[self.task])
        if self.init is None:
            object.__setattr__(self, "init", DEFAULT_INIT[self.task])
        if self.stop_at_accuracy is None:
            object.__setattr__(self, "stop_at_accuracy", DEFAULT_STOP_AT_ACCURACY[self.task])
        if self.init not in ("scratch", "steps"):
            raise ValueError(f"WarmStartConfig.init must be 'scratch' or 'steps', got {self.init!r}")
        for name in ("steps", "batch_size", "num_examples", "threads", "stop_check_every", "stop_check_problems"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"WarmStartConfig.{name} must be an int >= 1, got {value!r}")
        for name in ("warmup_steps", "eval_problems", "eval_max_new_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"WarmStartConfig.{name} must be an int >= 0, got {value!r}")
        if not 0.0 <= self.untagged_fraction <= 1.0:
            raise ValueError(f"WarmStartConfig.untagged_fraction must be in [0, 1], got {self.untagged_fraction!r}")
        if not self.mark_weight >= 1.0:
            raise ValueError(f"WarmStartConfig.mark_weight must be >= 1, got {self.mark_weight!r}")
        if not 0.0 <= self.stop_at_accuracy <= 1.0:
            raise ValueError(f"WarmStartConfig.stop_at_accuracy must be in [0, 1], got {self.stop_at_accuracy!r}")
        if not self.lr > 0:
            raise ValueError(f"WarmStartConfig.lr must be > 0, got {self.lr!r}")
        self.model.validate()

    def digest(self) -> str:
        """Hash of everything that shapes the model or its record; ``threads`` only changes speed."""
        fields = dataclasses.asdict(self)
        del fields["threads"]
        if self.task != "r1":  # only r1 reads it: other tasks keep their digests (and caches)
            del fields["untagged_fraction"]
        if self.task != "critic":  # likewise
            del fields["mark_weight"]
        if not self.stop_at_accuracy:  # a run that never checks keeps the digest it had before checks existed
            for name in ("stop_at_accuracy", "stop_check_every", "stop_check_problems"):
                del fields[name]
        if self.init == "steps":  # a change of the base's calibration must change this digest too
            fields["base"] = self.base_config().digest()
        # ... and so must a change of the task's prompt or target format
        problem = make_problems(1, 0, self.synthetic, "train")[0]
        sample = task_example(self.task, problem, corrupt=True, rng=random.Random(0))
        fields["sample"] = [sample.prompt, sample.target]
        if self.task == "r1":
            fields["sample"].append(untagged_r1_example(problem).target)
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def base_config(self) -> "WarmStartConfig":
        """The default `steps` warm start this one continues from when ``init == "steps"``."""
        return WarmStartConfig(
            task="steps", model=self.model, synthetic=self.synthetic, seed=self.seed, threads=self.threads
        )


# ---------------------------------------------------------------------------------------------
# Examples


@dataclass(frozen=True)
class WarmStartExample:
    """A (prompt, target) pair; ``original_correct`` is the critic's oracle label (else None)."""

    problem: ArithmeticProblem
    prompt: str
    target: str
    original_correct: bool | None = None


def task_example(task: Task, problem: ArithmeticProblem, *, corrupt: bool = False, rng: random.Random | None = None) -> WarmStartExample:
    """The SFT pair of ``problem`` for ``task``; for "critic", ``corrupt`` picks a corrupted
    response (drawn with ``rng``) instead of the correct one."""
    if task == "r1":
        prompt = render_prompt(PROMPT_OF_TASK[task], question=problem.question)
        return WarmStartExample(problem, prompt, format_r1_solution(problem))
    if task == "steps":
        prompt = render_prompt(PROMPT_OF_TASK[task], question=problem.question)
        return WarmStartExample(problem, prompt, " " + format_steps_solution(problem))
    if task == "critic":
        if corrupt:
            steps, labels = corrupt_steps(problem, rng or random.Random(0))
        else:
            steps, labels = problem.steps, judge_steps(problem, problem.steps)
        response = format_steps_solution(problem, steps=steps)
        prompt = render_prompt(PROMPT_OF_TASK[task], question=problem.question, response=response)
        return WarmStartExample(problem, prompt, " " + critique_text(problem, steps, labels), not corrupt)
    raise ValueError(f"unknown warm-start task {task!r}; expected one of {TASKS}")


def critic_responses(problems: Sequence[ArithmeticProblem], seed: int = 0) -> list[WarmStartExample]:
    """Held-out critic items: even indices keep the correct solution, odd ones are corrupted,
    so exactly half (rounded up) of the responses are right and chance Acc@Dis is 50 %."""
    rng = random.Random(f"cdra-warmstart-critic-eval:{seed}")
    return [task_example("critic", p, corrupt=i % 2 == 1, rng=rng) for i, p in enumerate(problems)]


def _training_examples(config: WarmStartConfig) -> list[WarmStartExample]:
    problems = make_problems(config.num_examples, config.seed, config.synthetic, "train")
    rng = random.Random(f"cdra-warmstart-train:{config.seed}")
    if config.task == "critic":
        return [task_example("critic", p, corrupt=rng.random() < 0.5, rng=rng) for p in problems]
    if config.task == "r1":
        return [untagged_r1_example(p) if rng.random() < config.untagged_fraction else task_example("r1", p) for p in problems]
    return [task_example(config.task, p) for p in problems]


def untagged_r1_example(problem: ArithmeticProblem) -> WarmStartExample:
    """The r1 example with its answer outside ``<answer>`` tags, so `r1_zero_reward_fn` gives 0."""
    tagged = task_example("r1", problem)
    steps = tagged.target.split(" </think>")[0]
    return dataclasses.replace(tagged, target=f"{steps} </think> The answer is {problem.answer}.")


def _eval_examples(task: Task, problems: Sequence[ArithmeticProblem]) -> list[WarmStartExample]:
    if task == "critic":
        return critic_responses(problems)
    return [task_example(task, p) for p in problems]


# ---------------------------------------------------------------------------------------------
# Training


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup, then cosine decay to 10 % of the peak: short runs end on small steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _train(
    model, tokenizer, examples: list[WarmStartExample], config: WarmStartConfig, check: Callable[[], float] | None = None
) -> tuple[list[float], list[tuple[int, float]]]:
    """SFT with response-only token-mean cross-entropy; returns the loss of every step and the
    (step, accuracy) of every early-stop check: with ``config.stop_at_accuracy`` set, ``check``
    scores the model every ``config.stop_check_every`` steps and the first score reaching the
    target ends training."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.98), weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, config.steps, config.warmup_steps)
    )
    rng = random.Random(f"cdra-warmstart-batches:{config.seed}")
    marks = [_mark_label_positions(tokenizer, e) for e in examples]  # empty but for critic targets
    order: list[int] = []
    eos = tokenizer.eos_token
    losses: list[float] = []
    checks: list[tuple[int, float]] = []
    model.train()
    for step in range(1, config.steps + 1):
        if len(order) < config.batch_size:  # epochs of shuffled examples
            fresh = list(range(len(examples)))
            rng.shuffle(fresh)
            order += fresh
        picked = order[: config.batch_size]
        del order[: config.batch_size]
        batch = [examples[i] for i in picked]
        tokens = tokenize_prompt_and_output([e.prompt for e in batch], [e.target + eos for e in batch], tokenizer)
        logits = model(tokens["input_ids"]).logits
        log_probs = log_probs_from_logits(logits, tokens["labels"])
        # a token mean, with the critic's comparison outcomes counted `mark_weight` times
        weights = _loss_weights(tokens["response_mask"], [marks[i] for i in picked], config.mark_weight)
        loss = -masked_mean(log_probs * weights, tokens["response_mask"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if check is not None and config.stop_at_accuracy and step % config.stop_check_every == 0:
            model.eval()
            checks.append((step, check()))
            model.train()
            if checks[-1][1] >= config.stop_at_accuracy:
                break
    model.eval()
    return losses, checks


def _mark_label_positions(tokenizer, example: WarmStartExample) -> list[int]:
    """Label positions (as in `tokenize_prompt_and_output`) of the first token of every
    comparison outcome in the example's target."""
    offsets = comparison_mark_offsets(example.target)
    if not offsets:
        return []
    prompt, *prefixes = encode_without_special_tokens(tokenizer, [example.prompt] + [example.target[:k] for k in offsets])
    return [len(prompt) + len(prefix) - 1 for prefix in prefixes]


def _loss_weights(mask: torch.Tensor, marks: list[list[int]], mark_weight: float) -> torch.Tensor:
    """The response mask as weights, with ``mark_weight`` on every comparison outcome.

    The outcome (``same``/``DIFFERENT``) is one token in a critique of ~300: unweighted, the
    tiny critic learned everything but it within the budget (calibration notes above).
    """
    weights = mask.float()
    for row, positions in enumerate(marks):
        weights[row, positions] = mark_weight
    return weights


def warm_start(config: WarmStartConfig = WarmStartConfig(), root: Path | None = None) -> Path:
    """Warm-start (or reuse) the model of ``config``; returns its HF model directory.

    The directory is ``root/f"{task}-{digest}"`` (``root`` defaults to
    ``cache_root()/"warmstart"``) and holds ``warmstart.json``: the config, train seconds, the
    steps trained and the early-stop checks, the first and final losses and held-out greedy
    metrics (`evaluate_accuracy`).
    """
    target = (root or cache_root() / "warmstart") / f"{config.task}-{config.digest()}"
    if (target / "warmstart.json").exists():
        return target
    with torch_threads(config.threads):
        torch.manual_seed(config.seed)
        init_dir = warm_start(config.base_config(), root) if config.init == "steps" else build_tiny_model(config.model)
        tokenizer = AutoTokenizer.from_pretrained(init_dir)
        model = AutoModelForCausalLM.from_pretrained(init_dir, dtype=torch.float32)
        examples = _training_examples(config)
        check = _validation_check(model, tokenizer, config) if config.stop_at_accuracy else None
        started, cpu_started = time.perf_counter(), time.process_time()
        losses, checks = _train(model, tokenizer, examples, config, check)
        train_seconds = time.perf_counter() - started
        # CPU seconds / wall seconds shows how much of the machine the run actually got.
        train_cpu_seconds = time.process_time() - cpu_started
        save_atomically(model, tokenizer, target)
        metrics = {}
        if config.eval_problems:
            problems = make_problems(config.eval_problems, config.seed, config.synthetic, "test")
            started = time.perf_counter()
            metrics = evaluate_accuracy(target, config.task, problems, config.eval_max_new_tokens or None)
            metrics["eval_seconds"] = time.perf_counter() - started
    tail = losses[-max(1, len(losses) // 20) :]
    record = {
        "config": dataclasses.asdict(config),
        "digest": config.digest(),
        "train_seconds": train_seconds,
        "train_cpu_seconds": train_cpu_seconds,
        "trained_steps": len(losses),
        "stop_checks": checks,
        "initial_loss": losses[0],
        "final_loss": sum(tail) / len(tail),
        "loss_curve": losses[:: max(1, len(losses) // 50)],
        "heldout": metrics,
    }
    write_record(target, record)
    return target


def _validation_check(model, tokenizer, config: WarmStartConfig) -> Callable[[], float]:
    """The early-stop score: greedy accuracy of ``model`` on the validation split, which neither
    the SFT data (train) nor the held-out metrics and jobs' evaluations (test) use."""
    problems = make_problems(config.stop_check_problems, config.seed, config.synthetic, "validation")
    return lambda: evaluate_model(model, tokenizer, config.task, problems)["accuracy"]


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` inside the block, restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def write_record(target: Path, record: dict) -> None:
    """``target/warmstart.json``, written atomically: its presence marks a finished warm start."""
    staging = target / ".warmstart.json.tmp"
    staging.write_text(json.dumps(record, indent=2))
    os.replace(staging, target / "warmstart.json")


# ---------------------------------------------------------------------------------------------
# Evaluation


def _default_max_new_tokens(examples: Sequence[WarmStartExample]) -> int:
    """Room for the longest reference target (bytes = tokens) plus a margin for detours."""
    return max(len(e.target.encode()) for e in examples) + 16


def _generate(
    model, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float, num_samples: int, batch_size: int
) -> list[list[str]]:
    """``num_samples`` completions per prompt (greedy when temperature is 0), cut at EOS."""
    tokenizer.padding_side = "left"  # batched decoding continues every prompt at the same column
    outputs: list[list[str]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 else {"do_sample": False}
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                num_return_sequences=num_samples,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **sampling,
            )
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        outputs += [texts[i : i + num_samples] for i in range(0, len(texts), num_samples)]
    return outputs


def _score(task: Task, example: WarmStartExample, response: str) -> tuple[float, float, str | None]:
    """(correct, well formatted, extracted answer) of one response to one held-out example."""
    if task == "r1":
        if R1_STOP in response:  # what a generator with the template's stop string returns
            response = response[: response.index(R1_STOP) + len(R1_STOP)]
        r = r1_zero_reward_fn(response, example.problem.answer, fast=True)
        return r["reward"], r["format_reward"], r1_zero_answer(response)
    if task == "steps":
        answer = extract_gsm8k_answer(response)
        return float(answer == example.problem.answer), float("The answer is" in response), answer
    verdict = parse_final_verdict(response)
    right = verdict is not None and verdict == example.original_correct
    return float(right), float(verdict is not None), None if verdict is None else str(verdict)


def evaluate_accuracy(
    model_dir: Path | str,
    task: Task,
    problems: Sequence[ArithmeticProblem],
    max_new_tokens: int | None = None,
    *,
    temperature: float = 0.0,
    num_samples: int = 1,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, float]:
    """Held-out metrics of the model in ``model_dir`` on ``problems`` (use ``split="test"``).

    ``accuracy``: r1, mean `r1_zero_reward_fn` reward; steps, extracted answer == gold; critic,
    Acc@Dis, final verdict == whether the response (see `critic_responses`) was correct.
    ``format_rate``: r1 format reward, steps "The answer is" present, critic verdict parsed.
    The critic also gets ``acc_on_correct`` / ``acc_on_wrong``. Greedy by default; with
    ``temperature > 0`` and ``num_samples = k`` also ``mixed_rate`` (fraction of problems whose
    k samples are neither all right nor all wrong: the groups GRPO learns from) and
    ``distinct_answers`` (distinct extracted answers among the k, unparsable ones counted as
    one, averaged). ``max_new_tokens=None`` allows the
    longest reference target plus 16.
    """
    _check_eval_args(task, problems, temperature, num_samples)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return evaluate_model(model, tokenizer, task, problems, max_new_tokens, temperature=temperature,
                          num_samples=num_samples, batch_size=batch_size, seed=seed)


def _check_eval_args(task: str, problems: Sequence[ArithmeticProblem], temperature: float, num_samples: int) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown warm-start task {task!r}; expected one of {TASKS}")
    if not problems:
        raise ValueError("evaluate_accuracy needs at least one problem")
    if num_samples < 1 or (num_samples > 1 and temperature <= 0):
        raise ValueError(f"num_samples={num_samples} needs temperature > 0 when above 1 (got {temperature})")


def evaluate_model(
    model,
    tokenizer,
    task: Task,
    problems: Sequence[ArithmeticProblem],
    max_new_tokens: int | None = None,
    *,
    temperature: float = 0.0,
    num_samples: int = 1,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, float]:
    """`evaluate_accuracy` of an already loaded model (in eval mode)."""
    _check_eval_args(task, problems, temperature, num_samples)
    examples = _eval_examples(task, problems)
    if temperature > 0:  # greedy needs no seed, and must not reset the RNG of a training run it checks
        torch.manual_seed(seed)
    responses = _generate(
        model,
        tokenizer,
        [e.prompt for e in examples],
        max_new_tokens or _default_max_new_tokens(examples),
        temperature,
        num_samples,
        batch_size,
    )
    scores = [[_score(task, e, r) for r in rs] for e, rs in zip(examples, responses)]
    flat = [s for group in scores for s in group]
    metrics = {
        "accuracy": sum(s[0] for s in flat) / len(flat),
        "format_rate": sum(s[1] for s in flat) / len(flat),
        "num_problems": float(len(examples)),
    }
    if task == "critic":
        for name, label in (("acc_on_correct", True), ("acc_on_wrong", False)):
            picked = [s[0] for e, group in zip(examples, scores) for s in group if e.original_correct == label]
            metrics[name] = sum(picked) / max(1, len(picked))
    if num_samples > 1:
        wins = [sum(s[0] for s in group) for group in scores]
        metrics["mixed_rate"] = sum(0 < w < num_samples for w in wins) / len(wins)
        metrics["distinct_answers"] = sum(len({s[2] for s in group}) for group in scores) / len(scores)
    return metrics
