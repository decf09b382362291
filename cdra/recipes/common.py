"""Pieces every recipe loop shares: run settings, the prompt stream, checks before start, models, checkpoints."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cdra.config import ConfigError, check
from cdra.data.example import TaskExample
from cdra.data.loaders import DatasetSpec, load_dataset_spec
from cdra.data.prompts import PROMPTS
from cdra.runtime.cluster import RoleResources
from cdra.runtime.learner import LearnerConfig
from cdra.runtime.roles import Reference
from cdra.runtime.rollout import EngineConfig, SamplingConfig


@dataclass
class RunConfig:
    output_dir: str = field(default="outputs/run", metadata={"help": "metrics.jsonl, reward_curve.png, checkpoints, final model"})
    seed: int = 0
    ray_address: str | None = field(default=None, metadata={"help": "Ray cluster address; default: RAY_ADDRESS or a local instance"})
    use_wandb: bool = True
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"
    checkpoint_every: int = field(default=10, metadata={"help": "save learner + driver state every K steps, and always at the end of the run (0: only at the end)"})
    resume: bool = field(default=False, metadata={"help": "continue from the latest checkpoint in output_dir"})
    max_job_restarts: int = field(default=0, metadata={"help": "after a dead learner rank, resume from the last checkpoint up to N times within the same job (0: stop)"})
    stop_after: int | None = field(default=None, metadata={"help": "stop (as if interrupted) after this step; for resume tests"})
    eval_every: int = 5
    placement_strategy: Literal["PACK", "SPREAD"] = "PACK"

    def validate(self) -> None:
        check(bool(self.output_dir), "output_dir must not be empty")
        check(self.checkpoint_every >= 0, "checkpoint_every must be >= 0")
        check(self.max_job_restarts >= 0, "max_job_restarts must be >= 0")
        check(self.eval_every >= 1, "eval_every must be >= 1")
        check(self.stop_after is None or self.stop_after >= 1, "stop_after must be >= 1 (or null)")


@dataclass
class ReferenceConfig:
    """Where the KL anchor runs (`cdra.runtime.roles.Reference`)."""

    placement: Literal["own", "learner"] = field(default="own", metadata={"help": "own: a bundle of its own (on a GPU cluster `gpus` of an accelerator, bf16); learner: beside learner rank 0, taking `gpus` of its accelerator"})
    gpus: float = field(default=1.0, metadata={"help": "its accelerator share on a GPU cluster (placement=learner: of rank 0's, in (0, 1))"})

    def validate(self) -> None:
        check(self.gpus > 0, f"reference.gpus must be > 0, got {self.gpus}")
        check(self.placement == "own" or self.gpus < 1, f"reference.placement=learner shares rank 0's accelerator: reference.gpus must be < 1, got {self.gpus}")

    def role(self) -> Reference:
        return Reference(placement=self.placement, gpus=self.gpus)


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
    """The examples of `spec` (a `LoadResult`: a list that also carries `skipped`, the rows
    dropped under on_error=skip). Every failure is a ValueError naming `what`."""
    try:
        result = load_dataset_spec(spec)
    except (ValueError, OSError) as e:  # UnicodeDecodeError is a ValueError and names no file
        where = f" {spec.path}" if spec.path and spec.path not in str(e) else ""
        raise ValueError(f"{what}{where}: {type(e).__name__}: {e}") from e
    if getattr(result, "skipped", 0):
        print(f"[cdra] {what}: skipped {result.skipped} malformed rows (on_error=skip); first: {result.errors[:1]}")
    if not result:
        raise ValueError(f"{what}: dataset {spec.format} {spec.path or ''} produced no examples")
    return result


# ----------------------------------------------------------------------------- validation before any actor starts


# DeepSpeed keys the learner derives from LearnerConfig (and checks there); extra_ds_config
# replacing one would silently undo that check (a whole `zero_optimization` drops the stage)
RESERVED_DS_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                    "managed_gradient_accumulation", "gradient_clipping", "zero_optimization", "bf16", "fp16", "optimizer")


def check_learner(c: LearnerConfig, key: str) -> None:
    check(c.num_ranks >= 1, f"{key}.num_ranks must be >= 1, got {c.num_ranks}")
    check(c.micro_batch_size >= 1, f"{key}.micro_batch_size must be >= 1, got {c.micro_batch_size}")
    check(c.lr > 0, f"{key}.lr must be > 0, got {c.lr}")
    check(all(0.0 <= b < 1.0 for b in c.betas), f"{key}.betas must be in [0, 1), got {list(c.betas)}")
    check(c.weight_decay >= 0, f"{key}.weight_decay must be >= 0, got {c.weight_decay}")
    check(c.grad_clip >= 0, f"{key}.grad_clip must be >= 0 (0: no clipping), got {c.grad_clip}")
    check(c.sync_bucket_mb >= 1, f"{key}.sync_bucket_mb must be >= 1, got {c.sync_bucket_mb}")
    check(c.num_cpus_per_rank >= 0, f"{key}.num_cpus_per_rank must be >= 0, got {c.num_cpus_per_rank}")
    reserved = sorted(set(c.extra_ds_config) & set(RESERVED_DS_KEYS))
    check(not reserved, f"{key}.extra_ds_config must not set {reserved}: the learner derives them from "
                        f"{key}.zero_stage / micro_batch_size / grad_clip / dtype / lr")


def check_engine(c: EngineConfig, key: str) -> None:
    check(c.max_model_len >= 16, f"{key}.max_model_len must be >= 16, got {c.max_model_len}")
    check(0 < c.gpu_memory_utilization <= 1, f"{key}.gpu_memory_utilization must be in (0, 1], got {c.gpu_memory_utilization}")
    check(c.kv_cache_gb >= 1, f"{key}.kv_cache_gb must be >= 1, got {c.kv_cache_gb}")
    check(c.cpu_threads >= 1, f"{key}.cpu_threads must be >= 1, got {c.cpu_threads}")


def check_sampling(c: SamplingConfig, key: str) -> None:
    check(c.temperature >= 0, f"{key}.temperature must be >= 0, got {c.temperature}")
    check(0 < c.top_p <= 1, f"{key}.top_p must be in (0, 1], got {c.top_p}")
    check(c.max_tokens >= 1, f"{key}.max_tokens must be >= 1, got {c.max_tokens}")
    check(0 <= c.min_tokens <= c.max_tokens, f"{key}.min_tokens must be in [0, max_tokens={c.max_tokens}], got {c.min_tokens}")


def check_dataset(spec: DatasetSpec, key: str) -> None:
    if spec.format in ("synthetic", "synthetic_mcq"):
        check(spec.num_examples >= 1, f"{key}.num_examples must be >= 1, got {spec.num_examples}")
        check(spec.num_steps >= 1 and spec.max_operand >= 1 and spec.max_value >= 1,
              f"{key}: num_steps, max_operand and max_value must be >= 1")
        check(spec.format != "synthetic_mcq" or spec.num_choices >= 2, f"{key}.num_choices must be >= 2")
    check(spec.limit is None or spec.limit >= 1, f"{key}.limit must be >= 1 (or null), got {spec.limit}")


def check_template(name: str, key: str) -> None:
    check(name in PROMPTS, f"{key}: unknown prompt template {name!r}; valid: {sorted(PROMPTS)}")


def check_positive(owner: object, *names: str) -> None:
    """Each named count or time of `owner` is > 0."""
    for name in names:
        value = getattr(owner, name)
        check(value > 0, f"{name} must be > 0, got {value}")


def check_model_path(path: str, key: str) -> None:
    """An explicit model directory must exist now; empty means the embedded tiny model."""
    if path and not (Path(path).expanduser() / "config.json").is_file():
        raise ConfigError(f"{key}: {path!r} is not an HF model directory (no config.json)")


def check_verifier(name: str, key: str) -> None:
    from cdra.runtime.scorer import resolve_verifier

    try:
        resolve_verifier(name)
    except ValueError as e:
        raise ConfigError(f"{key}: {e}") from e


def resolve_model(model_path: str, zoo_checkpoint: str) -> str:
    """An explicit HF directory (must exist), or the embedded default: the shipped zoo
    checkpoint `zoo_checkpoint` (`cdra.models.zoo`), or an untrained tiny model when it is
    "none" (SFT starts from scratch)."""
    if model_path:
        path = Path(model_path).expanduser()
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"model_path {model_path!r} is not an HF model directory (no config.json)")
        return str(path)
    if zoo_checkpoint == "none":
        from cdra.models.tiny import build_tiny_model

        return str(build_tiny_model())
    from cdra.models.zoo import checkpoint_path

    return checkpoint_path(zoo_checkpoint)


def resolve_actor(actor_path: str) -> str:
    """A Critique-RL actor: an explicit HF directory, or the zoo's refiner (the `steps` actor
    that also learned to revise an attempt given a critique)."""
    return resolve_model(actor_path, "refiner")


@dataclass
class Prepared:
    """What a job checked and loaded before starting Ray: its datasets and planned actors."""

    data: dict[str, list[TaskExample]]
    roles: dict[str, RoleResources]

    def skipped_metrics(self) -> dict[str, float]:
        """`data/{name}_skipped`: rows of each dataset dropped under on_error=skip."""
        return {f"data/{name.removesuffix('_data')}_skipped": float(getattr(examples, "skipped", 0))
                for name, examples in self.data.items()}

    def describe(self) -> str:
        lines = ["data:"] + [f"  {name}: {len(ex)} examples, {getattr(ex, 'skipped', 0)} rows skipped" for name, ex in self.data.items()]
        lines.append("actors (role x count: CPUs / GPUs each; the GPUs are asked for on a GPU cluster only):")
        lines += [f"  {role} x {r.count}: {r.num_cpus:g} CPU / {r.num_gpus:g} GPU" for role, r in self.roles.items()]
        total_cpu = sum(r.count * r.num_cpus for r in self.roles.values())
        total_gpu = sum(r.count * r.num_gpus for r in self.roles.values())
        lines.append(f"  total: {total_cpu:g} CPU, {total_gpu:g} GPU")
        return "\n".join(lines)


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


def rng_states() -> dict[str, Any]:
    """The driver's Python, numpy and torch RNG states (a resume continues their streams)."""
    import numpy as np
    import torch

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_states(states: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
