"""A recipe's runtime for one run: starts its roles, drives steps, logs, checkpoints, resumes.

Recipes stay readable loops ("generate, score, learn") because everything around them lives
here: resolving the model, starting the roles the recipe declares (`cdra.runtime.roles`: one
placement group, closed together), the replay store, weight sync after each update, evaluation
(`cdra.recipes.evaluation`), metrics, checkpoints and exact resume.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ray
from tqdm import tqdm

from cdra.algos.experience import Sample
from cdra.config import save_config, to_dict
from cdra.data.example import TaskExample
from cdra.data.prompts import render_prompt
from cdra.recipes.common import (
    Prepared,
    PromptStream,
    RunConfig,
    checkpoint_dir,
    latest_checkpoint,
    resolve_actor,
    resolve_model,
    rng_states,
    set_rng_states,
    write_driver_state,
)
from cdra.recipes.evaluation import add_record_fields, answer_extractor, evaluate_policy, write_eval_records
from cdra.runtime.cluster import init_ray
from cdra.runtime.objectives import Objective
from cdra.runtime.replay import ReplayStore
from cdra.runtime.roles import Learners, PolicyEngines, PolicyModel, Reference, RoleSpec, RuleVerifiers, start_roles
from cdra.runtime.rollout import SamplingConfig
from cdra.runtime.tracking import Tracker

__all__ = ["Session", "resolve_actor", "resolve_model"]


class Session:
    """The recipe-facing side of a run: its started roles (`rollouts`, `learners`, `scorers`,
    `reference`, `sync`, and any other role as `roles[name]`), the replay store, the step
    counter, evaluation, logging, checkpoints and resume."""

    def __init__(self) -> None:
        raise TypeError("use Session.start(...)")

    @classmethod
    def start(cls, run: RunConfig, config: Any, *, model_path: str, zoo_checkpoint: str, roles: list[RoleSpec],
              replay_mode: str = "on_policy", max_staleness: int = 0, prepared: Prepared | None = None) -> Session:
        """Start `roles` (see `cdra.runtime.roles`) for the policy `model_path` (empty: the zoo
        checkpoint `zoo_checkpoint`). `prepared`: the job's checked data (from its `prepare`); its
        skipped-row counts go into every step's metrics and the summary."""
        self = object.__new__(cls)
        self.run = run
        self.prepared = prepared
        self.data_metrics = prepared.skipped_metrics() if prepared is not None else {}
        self.started = time.perf_counter()
        self.model_path = resolve_model(model_path, zoo_checkpoint)
        Path(run.output_dir).mkdir(parents=True, exist_ok=True)
        save_config(config, Path(run.output_dir) / "config.yaml")
        init_ray(run.ray_address)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.eos_id = self.tokenizer.eos_token_id
        self.roles = start_roles(roles, PolicyModel(self.model_path, self.pad_id, run.seed), run.placement_strategy)
        self.specs = roles
        self.replay = None
        try:
            # a run without learners (LPR synthesis) samples from frozen engines of the policy named "rollout"
            self.rollouts = self.roles.of_kind(PolicyEngines, roles) or self.roles.get("rollout")
            self.learners = self.roles.of_kind(Learners, roles)
            self.scorers = self.roles.of_kind(RuleVerifiers, roles)
            self.reference = self.roles.of_kind(Reference, roles)
            self.sync = self.roles.sync
            self.verifier = next((s.verifier for s in roles if isinstance(s, RuleVerifiers)), "")
            self.replay = ReplayStore.remote(mode=replay_mode, max_staleness=max_staleness, keep_history=True)
            self.step = 0
            self.version = 0
            self.stream: PromptStream | None = None
            self.uncollected_prompts = 0  # drawn from the stream for steps not collected yet (async)
            self.final_metrics: dict[str, float] = {}
            self.first_eval: dict[str, float] = {}
            resumed = self._maybe_resume()
            self.tracker = Tracker(run.output_dir, Path(run.output_dir).name, to_dict(config), use_wandb=run.use_wandb,
                                   wandb_mode=run.wandb_mode, resume_step=self.step if resumed else None)
        except BaseException:
            self._free()
            raise
        return self

    # ------------------------------------------------------------------ helpers for recipes

    def prompt(self, template: str, example: TaskExample, **fields: str) -> str:
        return render_prompt(template, question=example.question, **fields)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def prompt_stream(self, examples: list[TaskExample]) -> PromptStream:
        self.stream = PromptStream(examples, self.run.seed)
        self.stream.cursor = self._resume_cursor
        return self.stream

    def steps(self, total: int) -> Iterator[int]:
        """Step indices still to run; honours resume and `stop_after`."""
        self.total_steps = total
        bar = tqdm(total=total, initial=self.step, desc=Path(self.run.output_dir).name, dynamic_ncols=True)
        while self.step < total:
            if self.run.stop_after is not None and self.step >= self.run.stop_after:
                break
            yield self.step
            bar.update(1)
        bar.close()

    def attach_reference_logprobs(self, samples: list[Sample]) -> None:
        """The reference (KL anchor) log-probs of each response token, for samples that lack them."""
        missing = [s for s in samples if s.ref_logprobs is None]
        if self.reference is None or not missing:
            return
        for s, ref in zip(missing, ray.get(self.reference.logprobs.remote(missing))):
            s.ref_logprobs = ref

    def learn(self, samples: list[Sample], objective: Objective, optimizer_steps: int = 1, sync: bool = True) -> dict[str, float]:
        """Replay store -> learner update -> versioned weight broadcast. Returns metrics.

        ``sync=False`` leaves the engines behind until the next `sync_engines` (or evaluation):
        SFT generates only to evaluate, so it need not pay a broadcast per step."""
        self.attach_reference_logprobs(samples)
        ray.get(self.replay.add.remote(samples))
        batch = ray.get(self.replay.take.remote(None, self.version))
        metrics = self.learners.train(batch, objective, optimizer_steps)
        self.version += 1
        if sync:
            metrics["sync/seconds"] = self.sync_engines()
        stats = ray.get(self.replay.stats.remote())
        metrics["replay/queue_depth"] = float(stats["size"])
        metrics["replay/evicted_stale"] = float(stats["evicted_stale"])
        metrics["policy/version"] = float(self.version)
        return metrics

    def sync_engines(self) -> float:
        """Bring the engines to the learner's current version; returns the seconds it took."""
        return self.sync.push(self.version) if self.sync is not None and self.sync.version != self.version else 0.0

    def evaluate(self, examples: list[TaskExample], template: str, sampling: SamplingConfig, tag: str = "eval",
                 samples: int = 0, record_fields: Callable[[dict], dict[str, float]] | None = None) -> dict[str, float]:
        """The current policy on held-out examples (`cdra.recipes.evaluate.evaluate_policy`):
        greedy (``{tag}/reward``, ``{tag}/accuracy``, ``{tag}/format``), and with ``samples > 0``
        also that many samples per example at ``sampling``'s temperature (``{tag}/sampled_reward``:
        the quantity RL maximizes, ``{tag}/pass@k``, ``{tag}/maj@k``). ``record_fields`` adds a
        recipe's own 0/1 fields to each per-example record (id, question, greedy, correct), and
        their means as ``{tag}/<field>``. The records go to ``<output_dir>/eval/{tag}-step<N>.jsonl``,
        where `python -m cdra.recipes.compare` pairs them per question across runs."""
        self.sync_engines()
        prompts = [self.encode(self.prompt(template, e)) for e in examples]
        sampled = dataclasses.replace(sampling, seed=self.run.seed) if samples > 0 and sampling.temperature > 0 else None
        report = evaluate_policy(self.rollouts, self.scorers, prompts, examples, dataclasses.replace(sampling, temperature=0.0, seed=None),
                                 sampled, samples, pass_k=sorted({1, samples}) if sampled else [], maj_k=[samples] if sampled else [],
                                 answer_of=answer_extractor(self.verifier), tag=tag)
        if record_fields is not None:
            report.metrics.update({f"{tag}/{k}": v for k, v in add_record_fields(report.records, record_fields).items()})
        write_eval_records(Path(self.run.output_dir) / "eval" / f"{tag}-step{self.step}.jsonl", report.records)
        if not self.first_eval:
            self.first_eval = dict(report.metrics)
            print(f"[cdra] {tag} before training: " + ", ".join(f"{k} {v:.3f}" for k, v in report.metrics.items()))
        return report.metrics

    def finish_step(self, metrics: dict[str, float], evaluation: Callable[[], dict[str, float]] | None = None) -> bool:
        """Log the step (evaluating when due), checkpoint when due; True if it evaluated."""
        self.step += 1
        last = self.step == getattr(self, "total_steps", -1) or self.step == self.run.stop_after
        evaluated = evaluation is not None and (self.step % self.run.eval_every == 0 or last)
        if evaluated:
            metrics.update(evaluation())
        metrics["time/elapsed_s"] = time.perf_counter() - self.started
        metrics.update(self.data_metrics)
        if self.stream is not None:  # past 1.0 the run revisits prompts: train metrics then partly measure memory
            metrics["data/epoch"] = self.stream.epoch
        scorer_stats = self.scorers.stats()
        metrics["scorer/errors"] = float(scorer_stats["errors"])
        metrics["scorer/timeouts"] = float(scorer_stats["timeouts"])
        self.tracker.log(self.step, metrics)
        tqdm.write(self.tracker.summary_line(self.step, metrics))
        self.final_metrics.update(metrics)
        every = self.run.checkpoint_every
        if (every and self.step % every == 0) or last:  # always at the end: a finished or stopped run can resume
            self.checkpoint()
        return evaluated

    def end_here(self) -> None:
        """An early stop: the current step becomes the run's last, so `close` saves the model."""
        self.total_steps = self.step

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self) -> None:
        """Learner (weights, optimizer, scheduler: DeepSpeed's checkpoint) and driver state: step,
        version, the data cursor counted at collection (prompts drawn for a step still in flight
        are drawn again after a resume), RNG states, replay state, the first evaluation."""
        tag = f"step-{self.step}"
        directory = str(checkpoint_dir(self.run.output_dir))
        self.learners.save_checkpoint(directory, tag, {"version": self.version, "step": self.step})
        cursor = (self.stream.cursor - self.uncollected_prompts) if self.stream else 0
        state = {"step": self.step, "version": self.version, "cursor": cursor, "rng": rng_states(),
                 "replay": ray.get(self.replay.state_dict.remote()), "first_eval": self.first_eval,
                 "learner_checksum": self.learners.call_all("state_checksum")[0]}
        (Path(directory) / f"{tag}.driver.pkl").write_bytes(pickle.dumps(state))
        write_driver_state(self.run.output_dir, tag, {"step": self.step, "version": self.version})

    def _maybe_resume(self) -> bool:
        self._resume_cursor = 0
        if not self.run.resume:
            return False
        found = latest_checkpoint(self.run.output_dir)
        if found is None:
            print(f"[cdra] resume=true but no checkpoint in {self.run.output_dir}; starting fresh")
            return False
        tag, _ = found
        directory = checkpoint_dir(self.run.output_dir)
        state = pickle.loads((directory / f"{tag}.driver.pkl").read_bytes())
        self.learners.load_checkpoint(str(directory), tag)
        self.step, self.version, self._resume_cursor = state["step"], state["version"], state["cursor"]
        self.first_eval = state.get("first_eval", {})
        if "rng" in state:
            set_rng_states(state["rng"])
        # the summary shows both: equal (bit for bit) when the learner really loaded the checkpoint
        self.final_metrics["resume/saved_checksum"] = float(state.get("learner_checksum", float("nan")))
        self.final_metrics["resume/loaded_checksum"] = float(self.learners.call_all("state_checksum")[0])
        ray.get(self.replay.load_state_dict.remote(state["replay"]))
        if self.sync is not None:  # engines start from the base model: bring them up to date (frozen ones need nothing)
            self.sync.push(self.version)
        print(f"[cdra] resumed from {tag}: step {self.step}, policy version {self.version}")
        return True

    # ------------------------------------------------------------------ end of run

    def close(self) -> dict[str, float]:
        out = Path(self.run.output_dir)
        finished = self.step >= getattr(self, "total_steps", 0)
        try:
            if finished and self.learners is not None:  # a run without learners has no model of its own
                self.learners.save_pretrained(str(out / "final_model"), self.model_path)
                ray.get(self.replay.export.remote(str(out / "experience.parquet")))
            curves = [k for k in ("reward/mean", "eval/reward", "eval/sampled_reward") if k in self.final_metrics]
            self.tracker.plot(curves or ["reward/mean"])
            self.tracker.close()
            summary = {**{f"{k}_before": v for k, v in self.first_eval.items()}, **self.final_metrics}
            (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        finally:  # also after a failed step (e.g. a dead learner rank): free the actors and their bundles
            self._free()
        return summary

    def _free(self) -> None:
        try:
            if self.replay is not None:
                ray.kill(self.replay, no_restart=True)
        finally:
            self.roles.close()
