"""Scorers: one interface, `score(items) -> list[ScoreResult]`, several backends.

- `RuleScorer` actors run a verifier function (from `cdra.rewards` or `module:function`) in a
  worker process with one per-call time limit; a call that raises or overruns scores 0 and is
  counted (`errors`, `timeouts`), never crashes.
- `cdra.runtime.judge.JudgePool` serves generative judges (their own vLLM engines or the
  policy's) and `cdra.runtime.prm_actor.PRMPool` a discriminative PRM; both return the same
  `ScoreResult`s, with per-step scores and token spans.
`ScorerPool` spreads items over several rule actors and keeps the input order.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

VerifierFn = Callable[[str, str], dict[str, float]]


@dataclass
class ScoreItem:
    response: str
    ground_truth: str
    prompt: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    response_ids: list[int] | None = None  # the policy's response tokens: step judges need them for spans
    prompt_ids: list[int] | None = None  # the policy's prompt tokens: a discriminative PRM reads prompt + response


@dataclass
class ScoreResult:
    score: float
    details: dict[str, float] = field(default_factory=dict)
    step_scores: list[float] | None = None
    step_spans: list[tuple[int, int]] | None = None  # token [start, end) of each step in the item's response_ids
    error: str | None = None


def _builtin_verifiers() -> dict[str, VerifierFn]:
    """Strict graders (a hedged answer naming several values scores 0) and, as `NAME_lenient`,
    the upstream behaviour that takes the first or last candidate."""
    from cdra.rewards.extraction import extract_answer, extract_gsm8k_answer
    from cdra.rewards.grading import grade_answer
    from cdra.rewards.hedging import all_boxed_contents, names_several_values
    from cdra.rewards.r1_zero import r1_zero_reward_fn

    def by_kind(kind: str, strict: bool) -> VerifierFn:
        def verify(response: str, truth: str) -> dict[str, float]:
            predicted = extract_gsm8k_answer(response, strict) if kind == "gsm8k" else extract_answer(response, kind)
            hedged = strict and kind == "math" and predicted is not None and _math_hedged(response, truth)
            correct = predicted is not None and not hedged and grade_answer(predicted, truth)
            return {"reward": float(correct), "answer_reward": float(correct), "format_reward": float(predicted is not None)}
        return verify

    def _math_hedged(response: str, truth: str) -> bool:
        # the answer region only (the boxes, else the extracted line): the reasoning may say "not"
        boxes = all_boxed_contents(response)
        return names_several_values(" ".join(f"\\boxed{{{b}}}" for b in boxes) if boxes else extract_answer(response, "math"), truth)

    def r1_zero(strict: bool) -> VerifierFn:
        return lambda response, truth: r1_zero_reward_fn(response, truth, strict=strict)

    out: dict[str, VerifierFn] = {}
    for strict, suffix in ((True, ""), (False, "_lenient")):
        out[f"r1_zero{suffix}"] = r1_zero(strict)
        for kind in ("gsm8k", "math", "mcq", "aqua"):
            out[f"{kind}{suffix}"] = by_kind(kind, strict)
    return out


def resolve_verifier(name: str) -> VerifierFn:
    """A built-in verifier name, or `package.module:function` for a user verifier."""
    builtins = _builtin_verifiers()
    if name in builtins:
        return builtins[name]
    if ":" not in name:
        raise ValueError(f"unknown verifier {name!r}: use one of {sorted(builtins)} or 'module:function'")
    module, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load verifier {name!r}: {e}") from e
    if not callable(fn):
        raise ValueError(f"verifier {name!r} is not callable")
    return fn


_worker_verifiers: dict[str, VerifierFn] = {}


def _load_in_worker(name: str) -> None:
    """Worker-process initializer: import the verifier (and math-verify) before any timed call."""
    _worker_verifiers[name] = resolve_verifier(name)
    try:
        from cdra.rewards.grading import grade_answer

        grade_answer("\\frac{1}{2}", "0.5")  # warms math-verify's parser outside any call's time limit
    except Exception:  # noqa: BLE001 - a broken grader shows up (and is counted) on the first real call
        pass


def _verify_in_worker(name: str, response: str, truth: str) -> tuple[dict[str, float], int]:
    """One verifier call in a pool worker: its details and the grading errors it swallowed."""
    from cdra.rewards.grading import grading_stats

    before = grading_stats().errors
    details = _worker_verifiers[name](response, truth)
    return details, grading_stats().errors - before


def score_result(details: Any) -> ScoreResult:
    """A verifier's return value as a ScoreResult; a missing or non-finite reward is an error."""
    score = float(details["reward"])
    if not math.isfinite(score):
        raise ValueError(f"non-finite reward {score}")
    return ScoreResult(score, {k: float(v) for k, v in details.items()})


class RuleScorer:
    """Ray actor body: runs one verifier in a worker process, one time limit per call.

    `pebble.ProcessPool` kills and replaces a worker whose call overruns `timeout_s`, so a
    verifier that hangs (in Python or in C) costs one call, never the scorer. Every failure
    scores 0 and is counted: a call that raises or returns a bad reward (`errors`, also
    math-verify errors the graders swallowed), a call past the limit (`timeouts`).
    """

    def __init__(self, verifier: str, timeout_s: float = 10.0) -> None:
        import multiprocessing

        import pebble

        self.verifier_name = verifier
        resolve_verifier(verifier)  # a bad name fails here, not in the worker
        self.timeout_s = timeout_s
        self.counts = {"calls": 0, "errors": 0, "timeouts": 0}
        # fork: a spawned worker would re-run the Ray worker's __main__
        self._pool = pebble.ProcessPool(max_workers=1, initializer=_load_in_worker, initargs=(verifier,),
                                        context=multiprocessing.get_context("fork"))

    def score(self, items: list[ScoreItem]) -> list[ScoreResult]:
        futures = [self._pool.schedule(_verify_in_worker, args=(self.verifier_name, it.response, it.ground_truth),
                                       timeout=self.timeout_s) for it in items]
        return [self._collect(f) for f in futures]

    def _collect(self, future: concurrent.futures.Future) -> ScoreResult:
        self.counts["calls"] += 1
        try:
            details, grading_errors = future.result()
            self.counts["errors"] += grading_errors
            return score_result(details)
        except concurrent.futures.TimeoutError:
            self.counts["timeouts"] += 1
            return ScoreResult(0.0, error=f"verifier {self.verifier_name} timed out after {self.timeout_s}s")
        except Exception as e:  # noqa: BLE001 - a broken verifier must not end the run: score 0, count it
            self.counts["errors"] += 1
            return ScoreResult(0.0, error=f"verifier {self.verifier_name} raised {type(e).__name__}: {e}")

    def stats(self) -> dict[str, int]:
        return dict(self.counts)

    def close(self) -> None:
        self._pool.stop()
        self._pool.join()


class ScorerPool:
    """Driver-side handle on N RuleScorer actors.

    Scoring is idempotent, so Ray's own task retries fit: a scorer killed mid-call restarts and
    re-runs the same chunk. A chunk whose actor is out of restarts is scored by the next live one.
    """

    def __init__(self, verifier: str, num_actors: int = 2, timeout_s: float = 10.0, actor_options: list[dict] | None = None,
                 max_restarts: int = 3) -> None:
        resolve_verifier(verifier)  # fail in the driver, before any actor starts
        remote = ray.remote(RuleScorer)
        options = actor_options or [{"num_cpus": 0.001} for _ in range(num_actors)]
        self.actors = [remote.options(max_restarts=max_restarts, max_task_retries=max_restarts, **opt).remote(verifier, timeout_s) for opt in options]
        self.gone: set[int] = set()
        self.version = 0

    def score(self, items: list[ScoreItem]) -> list[ScoreResult]:
        if not items:
            return []
        n = len(self.actors)
        chunks = [items[i::n] for i in range(n)]
        calls = [(a, c, self.actors[a].score.remote(c) if c else None) for a, c in zip(self._spread(n), chunks)]
        results = [self._result(a, c, ref) for a, c, ref in calls]
        out: list[ScoreResult | None] = [None] * len(items)
        for i, chunk_results in enumerate(results):
            for j, r in enumerate(chunk_results):
                out[i + j * n] = r
        return out  # type: ignore[return-value]

    def _spread(self, n: int) -> list[int]:
        live = [i for i in range(len(self.actors)) if i not in self.gone]
        if not live:
            raise RuntimeError(f"all {len(self.actors)} scorer actors died and have no restarts left")
        return [live[i % len(live)] for i in range(n)]

    def _result(self, actor: int, chunk: list[ScoreItem], ref: ray.ObjectRef | None) -> list[ScoreResult]:
        if ref is None:
            return []
        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError:  # retries exhausted: the actor is gone for good
            self.gone.add(actor)
            other = self._spread(1)[0]
            return self._result(other, chunk, self.actors[other].score.remote(chunk))

    def stats(self) -> dict[str, int]:
        total = {"calls": 0, "errors": 0, "timeouts": 0}
        live = [a for i, a in enumerate(self.actors) if i not in self.gone]
        for s in ray.get([a.stats.remote() for a in live]):
            for k in total:
                total[k] += s[k]
        return total
