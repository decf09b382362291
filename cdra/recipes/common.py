"""Pieces every recipe loop shares: run settings, the prompt stream, checkpoints, evaluation."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cdra.config import check, to_dict
from cdra.data.example import TaskExample
from cdra.data.loaders import DatasetSpec, load_dataset_spec
from cdra.data.prompts import render_prompt


@dataclass
class RunConfig:
    output_dir: str = field(default="outputs/run", metadata={"help": "metrics.jsonl, reward_curve.png, checkpoints, final model"})
    seed: int = 0
    ray_address: str | None = field(default=None, metadata={"help": "Ray cluster address; default: RAY_ADDRESS or a local instance"})
    use_wandb: bool = True
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"
    checkpoint_every: int = field(default=0, metadata={"help": "save learner + driver state every K steps (0: only at the end)"})
    resume: bool = field(default=False, metadata={"help": "continue from the latest checkpoint in output_dir"})
    stop_after: int | None = field(default=None, metadata={"help": "stop (as if interrupted) after this step; for resume tests"})
    eval_every: int = 5
    placement_strategy: Literal["PACK", "SPREAD"] = "PACK"

    def validate(self) -> None:
        check(self.checkpoint_every >= 0, "checkpoint_every must be >= 0")
        check(self.eval_every >= 1, "eval_every must be >= 1")


class PromptStream:
    """Deterministic, resumable order over a dataset: a fresh seeded shuffle per epoch."""

    def __init__(self, examples: list[TaskExample], seed: int) -> None:
        if not examples:
            raise ValueError("training dataset is empty")
        self.examples = examples
        self.seed = seed
        self.cursor = 0
        self._shuffled: tuple[int, list[int]] = (-1, [])  # (epoch, its order): one shuffle per epoch, not per draw

    def _order(self, epoch: int) -> list[int]:
        if self._shuffled[0] != epoch:
            order = list(range(len(self.examples)))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._shuffled = (epoch, order)
        return self._shuffled[1]

    @property
    def epoch(self) -> float:
        """Passes made over the dataset so far: 2.5 is two full passes and half of a third."""
        return self.cursor / len(self.examples)

    def next(self, n: int) -> list[TaskExample]:
        out = []
        for _ in range(n):
            epoch, index = divmod(self.cursor, len(self.examples))
            out.append(self.examples[self._order(epoch)[index]])
            self.cursor += 1
        return out


def synthetic_spec(split: str, num_examples: int) -> DatasetSpec:
    """The embedded default task, with the difficulty the zoo checkpoints were trained on."""
    from cdra.models.zoo import DEFAULT_SYNTHETIC as task

    return DatasetSpec(format="synthetic", split=split, num_examples=num_examples, num_steps=task.num_steps,
                       max_operand=task.max_operand, ops=tuple(task.ops), max_value=task.max_value)


def load_examples(spec: DatasetSpec, what: str) -> list[TaskExample]:
    result = load_dataset_spec(spec)
    if getattr(result, "skipped", 0):
        print(f"[cdra] {what}: skipped {result.skipped} malformed rows (on_error=skip); first: {result.errors[:1]}")
    if not result:
        raise ValueError(f"{what}: dataset {spec.format} {spec.path or ''} produced no examples")
    return list(result)


def prompt_text(template: str, example: TaskExample) -> str:
    return render_prompt(template, question=example.question)


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_dir(output_dir: str) -> Path:
    return Path(output_dir) / "checkpoints"


def latest_checkpoint(output_dir: str) -> tuple[str, dict[str, Any]] | None:
    """(tag, driver state) of the newest complete checkpoint, or None."""
    marker = checkpoint_dir(output_dir) / "latest.json"
    if not marker.exists():
        return None
    state = json.loads(marker.read_text())
    return state["tag"], state


def write_driver_state(output_dir: str, tag: str, state: dict[str, Any]) -> None:
    """Written after the learner checkpoint, so `latest.json` only ever names complete ones."""
    directory = checkpoint_dir(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"tag": tag, **state})
    tmp = directory / "latest.json.tmp"
    tmp.write_text(payload)
    os.replace(tmp, directory / "latest.json")


def config_snapshot(config: Any) -> dict[str, Any]:
    return to_dict(config)
