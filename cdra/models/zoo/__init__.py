"""The model zoo: tiny pretrained checkpoints the embedded defaults start from.

Each checkpoint is an ordinary HF model directory shipped in the package
(``cdra/models/zoo/checkpoints/<name>/``) with a ``card.json``: the build command, the recipe
and its digest, the data seed, the build's figures and held-out metrics. Jobs load them with no
training at run time, so every machine starts from the same weights and the README's figures
reproduce. ``python -m cdra.models.zoo build NAME|all`` rebuilds one through the project's own
SFT recipe (the learner group, as `jobs/sft.py` uses it); a test checks that every shipped card's
digest equals its recipe's, so a changed recipe without a rebuilt checkpoint fails CI.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cdra.data.synthetic import SyntheticConfig, make_problems
from cdra.models.tiny import TinyModelConfig
from cdra.models.zoo.data import DEFAULT_MODEL, DEFAULT_SYNTHETIC, TASKS, Task, training_items

__all__ = ["ZooRecipe", "RECIPES", "JobBuild", "JOB_BUILDS", "DEFAULT_SYNTHETIC", "checkpoint_dir", "checkpoint_path", "read_card", "ZOO_ROOT"]

ZOO_ROOT = Path(__file__).resolve().parent / "checkpoints"


@dataclass(frozen=True)
class ZooRecipe:
    """How one checkpoint is built: SFT of ``init`` ("scratch": a fresh `build_tiny_model`, or
    another checkpoint's name) on ``num_examples`` training items of ``task``.

    The lr schedule is a linear warm-up then cosine decay to ``min_lr_ratio`` of ``lr``.
    ``stop_at_accuracy`` (0: never): every ``stop_check_every`` steps the model is scored
    greedily on ``stop_check_problems`` validation-split problems and training ends at the first
    check reaching it (the schedule stays the one planned for ``steps``)."""

    name: str
    task: Task
    init: str = "scratch"
    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.01
    seed: int = 0
    data_seed: int = 0
    num_examples: int = 2000
    untagged_fraction: float = 0.5  # r1
    mark_weight: float = 1.0  # critic: loss weight of each comparison outcome token
    refine_fraction: float = 0.9  # refiner
    flipped_verdict_fraction: float = 0.25  # refiner
    stop_at_accuracy: float = 0.0
    stop_check_every: int = 30
    stop_check_problems: int = 100
    eval_problems: int = 200
    max_seq_len: int = 1024
    model: TinyModelConfig = DEFAULT_MODEL
    synthetic: SyntheticConfig = DEFAULT_SYNTHETIC

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"zoo recipe {self.name!r}: task must be one of {TASKS}, got {self.task!r}")
        for name in ("steps", "batch_size", "num_examples", "stop_check_every", "stop_check_problems"):
            if getattr(self, name) < 1:
                raise ValueError(f"zoo recipe {self.name!r}: {name} must be >= 1")
        if self.init != "scratch" and self.init not in RECIPES:
            raise ValueError(f"zoo recipe {self.name!r}: init must be 'scratch' or a zoo name, got {self.init!r}")

    def items(self):
        problems = make_problems(self.num_examples, self.data_seed, self.synthetic, "train")
        return training_items(self.task, problems, self.data_seed, untagged_fraction=self.untagged_fraction,
                              refine_fraction=self.refine_fraction, flipped_verdict_fraction=self.flipped_verdict_fraction)

    def digest(self) -> str:
        """Hash of the recipe, of two of its training items (so a change of a prompt template,
        target format or data generator changes it) and of its base checkpoint's recipe."""
        fields = dataclasses.asdict(self)
        fields["base"] = RECIPES[self.init].digest() if self.init != "scratch" else "scratch"
        problems = make_problems(2, self.data_seed, self.synthetic, "train")
        fields["sample"] = [[i.prompt, i.target, list(i.emphasis)] for i in
                            training_items(self.task, problems, self.data_seed, untagged_fraction=0.5,
                                           refine_fraction=0.5, flipped_verdict_fraction=0.5)]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


RECIPES: dict[str, ZooRecipe] = {}


def _register(recipe: ZooRecipe) -> None:
    RECIPES[recipe.name] = recipe


# The GRPO policy; the steps actor (base of the critic and the refiner); the Critique-RL critic,
# stopped early once it discriminates part of the time (a fully trained one leaves RL nothing to
# gain); the refiner, trained long enough to act on what a critique says about a new question;
# CDRA's step judge, trained to judge well (its RL trains the policy, not the judge).
_register(ZooRecipe(name="r1", task="r1", steps=300))
_register(ZooRecipe(name="steps", task="steps", steps=250))
_register(ZooRecipe(name="critic", task="critic", init="steps", steps=800, mark_weight=20.0, stop_at_accuracy=0.7))
_register(ZooRecipe(name="refiner", task="refiner", init="steps", steps=800, lr=1e-3, data_seed=1))
_register(ZooRecipe(name="genprm", task="genprm", init="steps", steps=1500, mark_weight=20.0, data_seed=2, num_examples=8000))
# SR-R1's policy, which answers and judges pairs of its own answers (starts from r1's arithmetic);
# with half its answers untagged (r1's share) it answered untagged greedily: held-out accuracy 0.
_register(ZooRecipe(name="sr_r1", task="sr_r1", init="r1", steps=600, lr=1e-3, mark_weight=5.0, data_seed=3, num_examples=4000,
                    untagged_fraction=0.25))


_OPERATIONAL_RUN_KEYS = ("ray_address", "use_wandb", "wandb_mode", "checkpoint_every", "resume", "stop_after",
                         "max_job_restarts", "placement_strategy")


@dataclass(frozen=True)
class JobBuild:
    """A checkpoint the project's jobs build, not the SFT builder: ``commands`` run in order from
    the repository root (the last one, `python -m cdra.models.zoo ship NAME RUN_DIR`, copies the
    final job's model here in fp16 with its card). The digest covers the default config of each
    job in ``configs`` ("module:Class") and the base checkpoint's recipe, so a changed default
    without a rebuilt checkpoint fails CI like a changed ZooRecipe."""

    name: str
    base: str
    commands: tuple[str, ...]
    configs: tuple[str, ...]
    run_dir: str  # the final job's run.output_dir in ``commands``

    @property
    def build_command(self) -> str:
        return " && ".join(self.commands)

    def digest(self) -> str:
        import importlib

        from cdra.config import to_dict

        fields: dict = {"base": RECIPES[self.base].digest(), "commands": list(self.commands)}
        for spec in self.configs:
            module, cls = spec.split(":")
            config = to_dict(getattr(importlib.import_module(module), cls)())
            for key in _OPERATIONAL_RUN_KEYS:  # how a run is driven, not what it builds
                config.get("run", {}).pop(key, None)
            fields[spec] = config
        return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:12]


# The LPR PRM (ALGORITHMS.md section 5): a (K+1)-class token classifier on the steps policy,
# trained on the synthesize job's Monte-Carlo values of the steps policy's own solutions.
JOB_BUILDS: dict[str, JobBuild] = {"lpr_prm": JobBuild(
    name="lpr_prm", base="steps",
    commands=("python jobs/synthesize_process_rewards.py",
              "python jobs/train_prm.py",
              "python -m cdra.models.zoo ship lpr_prm outputs/train_prm"),
    configs=("cdra.recipes.lpr_synthesize:SynthesizeConfig", "cdra.recipes.train_prm:TrainPRMConfig"), run_dir="outputs/train_prm")}


def checkpoint_dir(name: str, root: Path | None = None) -> Path:
    return (root or ZOO_ROOT) / name


def checkpoint_path(name: str) -> str:
    """The shipped HF directory of zoo checkpoint ``name``; a one-line error if it is missing."""
    if name not in RECIPES and name not in JOB_BUILDS:
        raise ValueError(f"unknown zoo checkpoint {name!r}; shipped: {sorted([*RECIPES, *JOB_BUILDS])}")
    path = checkpoint_dir(name)
    if not (path / "card.json").exists():
        how = JOB_BUILDS[name].build_command if name in JOB_BUILDS else f"python -m cdra.models.zoo build {name}"
        raise FileNotFoundError(f"zoo checkpoint {name!r} is not built at {path}; run: {how}")
    return str(path)


def read_card(name: str, root: Path | None = None) -> dict:
    return json.loads((checkpoint_dir(name, root) / "card.json").read_text())
