"""The actors of a run, declared by role: planned, placed in one placement group, started in
parallel and closed together.

A recipe lists what its run needs (`PolicyEngines` synced from the `Learners`, `FrozenEngines`
such as Critique-RL's actor, `RuleVerifiers`, a `Reference`, and any other pool through
`ActorPool`, e.g. a judge pool) and `start_roles` returns the started `Roles`. Each role's
actors get one bundle each, so a run gets all of them or fails at once with what it needs and
what the cluster has. A role that fails to start takes the others down with it: every actor
already started is killed and the placement group released (which also ends actors of a role
that was half-way through starting).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import ray

from cdra.runtime.cluster import Placement, RoleResources, on_gpu_cluster
from cdra.runtime.groups import LearnerGroup, RolloutPool, WeightSync
from cdra.runtime.learner import LearnerConfig
from cdra.runtime.reference import ReferenceModel
from cdra.runtime.rollout import EngineConfig
from cdra.runtime.scorer import ScorerPool


@dataclass(frozen=True)
class PolicyModel:
    """The model the learner trains: its HF directory, pad token and seed."""

    path: str
    pad_id: int
    seed: int = 0


class RoleSpec(Protocol):
    name: str

    def resources(self, gpu: bool) -> RoleResources:
        """Count and per-actor CPUs / GPUs (`gpu`: on a GPU cluster)."""

    def start(self, options: list[dict], policy: PolicyModel | None) -> Any:
        """Start the role's actors with one Ray option set each; returns the role's handle."""


@dataclass
class PolicyEngines:
    """vLLM engines of the policy, receiving the learner's weights after every update."""

    engine: EngineConfig
    count: int
    name: str = "rollout"

    def resources(self, gpu: bool) -> RoleResources:
        return RoleResources(self.count, 1.0, self.engine.gpus_per_engine(gpu))

    def start(self, options: list[dict], policy: PolicyModel | None) -> RolloutPool:
        policy = _need(policy, self)
        return RolloutPool(seeded(dataclasses.replace(self.engine, model_path=policy.path), policy), self.count, options)


@dataclass
class FrozenEngines:
    """vLLM engines of a model that never receives weights (Critique-RL's actor, a critic under evaluation)."""

    name: str
    model_path: str
    engine: EngineConfig
    count: int

    def resources(self, gpu: bool) -> RoleResources:
        return RoleResources(self.count, 1.0, self.engine.gpus_per_engine(gpu))

    def start(self, options: list[dict], policy: PolicyModel | None) -> RolloutPool:
        return RolloutPool(dataclasses.replace(self.engine, model_path=self.model_path), self.count, options)


@dataclass
class RuleVerifiers:
    """Rule verifier actors (`ScorerPool`): a time limit per call, failures counted."""

    verifier: str
    count: int
    timeout_s: float = 10.0
    name: str = "scorer"

    def resources(self, gpu: bool) -> RoleResources:
        return RoleResources(self.count, 0.0, 0.0)

    def start(self, options: list[dict], policy: PolicyModel | None) -> ScorerPool:
        return ScorerPool(self.verifier, self.count, self.timeout_s, options)


@dataclass
class Reference:
    """The frozen KL anchor (`ReferenceModel`), by default the policy's starting model.

    `placement="own"`: its own bundle, with `gpus` of an accelerator on a GPU cluster (bf16
    there; fp32 on CPU). `placement="learner"`: in learner rank 0's bundle, splitting that
    rank's CPU claim and, on a GPU cluster, taking `gpus` (< 1) of its accelerator: no extra
    device, the anchor sits next to rank 0 (in its own process: the learner has no slot for it).
    """

    model_path: str = ""
    placement: Literal["own", "learner"] = "own"
    gpus: float = 1.0
    name: str = "reference"

    def resources(self, gpu: bool) -> RoleResources:
        return RoleResources(1, 0.0, self.gpus if gpu else 0.0)

    def start(self, options: list[dict], policy: PolicyModel | None) -> Any:
        path = self.model_path or _need(policy, self).path
        pad_id = policy.pad_id if policy is not None else _pad_id(path)
        return ray.remote(ReferenceModel).options(**options[0]).remote(path, pad_id)


@dataclass
class Learners:
    """The DeepSpeed learner group training the policy."""

    config: LearnerConfig
    name: str = "learner"

    def resources(self, gpu: bool) -> RoleResources:
        return RoleResources(self.config.num_ranks, self.config.num_cpus_per_rank, 1.0 if gpu else 0.0)

    def start(self, options: list[dict], policy: PolicyModel | None) -> LearnerGroup:
        policy = _need(policy, self)
        return LearnerGroup(dataclasses.replace(self.config, model_path=policy.path, seed=policy.seed), policy.pad_id, options)


@dataclass
class ActorPool:
    """Any other pool of actors built from one Ray option set per actor, e.g. a judge pool:
    `build(actor_options) -> pool`. The pool's actors are found in its `workers` or `actors`
    attribute, so `Roles.close` ends them."""

    name: str
    count: int
    build: Callable[[list[dict]], Any]
    num_cpus: float = 1.0
    num_gpus: float = 1.0  # per actor, on a GPU cluster

    def resources(self, gpu: bool) -> RoleResources:
        return RoleResources(self.count, self.num_cpus, self.num_gpus if gpu else 0.0)

    def start(self, options: list[dict], policy: PolicyModel | None) -> Any:
        return self.build(options)


def seeded(engine: EngineConfig, policy: PolicyModel) -> EngineConfig:
    """The policy engine with the run's seed in its sampling seed. On CPU vLLM ignores
    per-request seeds and samples from the engine's own generator, so without this every
    `run.seed` would draw the same rollouts. Frozen engines keep their own `seed` (Critique-RL's
    seed table holds the frozen actor's attempts fixed across seeds)."""
    return dataclasses.replace(engine, seed=engine.seed + 1000 * policy.seed)


def _need(policy: PolicyModel | None, spec: Any) -> PolicyModel:
    if policy is None:
        raise ValueError(f"role {spec.name!r} ({type(spec).__name__}) needs the run's policy model; none was given")
    return policy


def _pad_id(path: str) -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _colocated(spec: RoleSpec) -> bool:
    return isinstance(spec, Reference) and spec.placement == "learner"


def check_roles(specs: list[RoleSpec]) -> None:
    """Names unique; at most one synced pool and learner group; a colocated reference needs learners."""
    names = [s.name for s in specs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"roles: duplicated role names {duplicated}")
    for kind in (PolicyEngines, Learners):
        if sum(isinstance(s, kind) for s in specs) > 1:
            raise ValueError(f"roles: at most one {kind.__name__} role")
    if any(isinstance(s, PolicyEngines) for s in specs) and not any(isinstance(s, Learners) for s in specs):
        raise ValueError("roles: PolicyEngines are synced from a Learners role, and there is none (use FrozenEngines)")
    for s in specs:
        if _colocated(s) and not any(isinstance(x, Learners) for x in specs):
            raise ValueError(f"roles: {s.name} placement=learner needs a Learners role")
        if _colocated(s) and not 0.0 < s.gpus < 1.0:
            raise ValueError(f"roles: {s.name} placement=learner takes a share of rank 0's accelerator: gpus must be in (0, 1), got {s.gpus}")


def plan(specs: list[RoleSpec], gpu: bool) -> dict[str, RoleResources]:
    """Role -> the bundles it asks for; a reference placed with the learner asks for none."""
    check_roles(specs)
    return {s.name: s.resources(gpu) for s in specs if not _colocated(s)}


def split_bundle(learner_options: dict, gpus: float) -> tuple[dict, dict]:
    """(rank 0's options, the colocated reference's) sharing one bundle: half of its CPU claim
    each, and `gpus` of rank 0's accelerator (when it has one) to the reference."""
    rank0, reference = dict(learner_options), dict(learner_options)
    rank0["num_cpus"] = reference["num_cpus"] = learner_options["num_cpus"] / 2
    if learner_options["num_gpus"] > 0:
        reference["num_gpus"] = learner_options["num_gpus"] * gpus
        rank0["num_gpus"] = learner_options["num_gpus"] - reference["num_gpus"]
    return rank0, reference


def actors_of(handle: Any) -> list[Any]:
    """The Ray actors behind a role's handle (a pool, a group, or one actor)."""
    if isinstance(handle, ray.actor.ActorHandle):
        return [handle]
    for attribute in ("workers", "actors"):
        if hasattr(handle, attribute):
            return list(getattr(handle, attribute))
    raise TypeError(f"cannot find the actors of {type(handle).__name__}: it has neither `workers` nor `actors`")


class Roles:
    """The started roles of a run: `roles[name]` is a role's handle; `sync` broadcasts the
    learner's weights to the policy engines (None without them)."""

    def __init__(self, placement: Placement) -> None:
        self.placement = placement
        self.handles: dict[str, Any] = {}
        self.sync: WeightSync | None = None
        self.closed = False

    def __getitem__(self, name: str) -> Any:
        if name not in self.handles:
            raise KeyError(f"no role {name!r}; this run has {sorted(self.handles)}")
        return self.handles[name]

    def get(self, name: str) -> Any:
        return self.handles.get(name)

    def of_kind(self, kind: type, specs: list[RoleSpec]) -> Any:
        return next((self.handles[s.name] for s in specs if isinstance(s, kind) and s.name in self.handles), None)

    def close(self) -> None:
        """Kill every role's actors and release the placement group (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            for handle in self.handles.values():
                for actor in actors_of(handle):
                    ray.kill(actor, no_restart=True)
        finally:
            self.placement.release()


def start_roles(specs: list[RoleSpec], policy: PolicyModel | None = None, strategy: str = "PACK") -> Roles:
    """Place every role in one placement group and start them all at once (engines load while
    the learner group sets up DeepSpeed); then join the learner and the policy engines in
    weight sync. On any failure everything started is closed and the first error raised."""
    check_roles(specs)
    roles = Roles(Placement(plan(specs, on_gpu_cluster()), strategy=strategy))  # type: ignore[arg-type]
    try:
        options = _options(roles.placement, specs)
        with ThreadPoolExecutor(max_workers=len(specs)) as threads:
            futures = {s.name: threads.submit(s.start, options[s.name], policy) for s in specs}
        errors = []
        for name, future in futures.items():
            if future.exception() is None:
                roles.handles[name] = future.result()
            else:
                errors.append((name, future.exception()))
        if errors:
            name, error = errors[0]
            raise RuntimeError(f"role {name!r} failed to start: {type(error).__name__}: {error}") from error
        learners, engines = roles.of_kind(Learners, specs), roles.of_kind(PolicyEngines, specs)
        if learners is not None and engines is not None:
            roles.sync = WeightSync(learners, engines)  # also re-joins restarted engines
    except BaseException:
        roles.close()
        raise
    return roles


def _options(placement: Placement, specs: list[RoleSpec]) -> dict[str, list[dict]]:
    out = {s.name: [placement.options(s.name, i) for i in range(placement.roles[s.name].count)] for s in specs if not _colocated(s)}
    for s in specs:
        if _colocated(s):
            learner = next(x.name for x in specs if isinstance(x, Learners))
            out[learner][0], reference = split_bundle(out[learner][0], s.gpus)  # type: ignore[attr-defined]
            out[s.name] = [reference]
    return out
