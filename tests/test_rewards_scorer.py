"""The rule scorer's one time limit and its error counts: a verifier that raises, returns a bad
reward, hangs in Python or hangs in math-verify scores 0 and is counted; the scorer carries on.
Runs `RuleScorer` (the Ray actor's body) in-process with its real worker-process pool."""

from __future__ import annotations

import time

import pytest

from cdra.runtime.scorer import RuleScorer, ScoreItem, resolve_verifier


def raising(response: str, truth: str) -> dict[str, float]:
    if response == "boom":
        raise RuntimeError("verifier bug")
    return {"reward": float(response == truth)}


def sleeping(response: str, truth: str) -> dict[str, float]:
    if response == "hang":
        time.sleep(60)
    return {"reward": float(response == truth)}


def nan_reward(response: str, truth: str) -> dict[str, float]:
    return {"reward": float("nan")}


@pytest.fixture
def scorer_of():
    made: list[RuleScorer] = []

    def make(name: str, timeout_s: float = 10.0) -> RuleScorer:
        made.append(RuleScorer(name, timeout_s))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.mark.timeout(120)
def test_raising_verifier_scores_zero_and_is_counted(scorer_of):
    scorer = scorer_of(f"{__name__}:raising")
    results = scorer.score([ScoreItem("7", "7"), ScoreItem("boom", "7"), ScoreItem("7", "7")])
    assert [r.score for r in results] == [1.0, 0.0, 1.0]
    assert "RuntimeError: verifier bug" in results[1].error
    assert scorer.stats() == {"calls": 3, "errors": 1, "timeouts": 0}


@pytest.mark.timeout(120)
def test_non_finite_reward_is_an_error(scorer_of):
    scorer = scorer_of(f"{__name__}:nan_reward")
    assert scorer.score([ScoreItem("1", "1")])[0].score == 0.0
    assert scorer.stats()["errors"] == 1


@pytest.mark.timeout(120)
def test_hanging_verifier_is_bounded_by_one_limit_and_counted(scorer_of):
    scorer = scorer_of(f"{__name__}:sleeping", timeout_s=2.0)
    scorer.score([ScoreItem("1", "1")])  # the worker is up
    started = time.monotonic()
    results = scorer.score([ScoreItem("hang", "1"), ScoreItem("1", "1")])
    elapsed = time.monotonic() - started
    assert [r.score for r in results] == [0.0, 1.0]  # the replaced worker serves the next call
    assert "timed out after 2.0s" in results[0].error
    assert elapsed < 20, elapsed
    assert scorer.stats() == {"calls": 3, "errors": 0, "timeouts": 1}


@pytest.mark.timeout(180)
def test_math_verify_hang_reaches_scorer_timeouts(scorer_of):
    scorer = scorer_of("math", timeout_s=3.0)
    results = scorer.score([ScoreItem("\\boxed{10^{10^{10^{10}}}}", "1"), ScoreItem("\\boxed{\\frac{1}{2}}", "0.5")])
    assert [r.score for r in results] == [0.0, 1.0]
    assert scorer.stats()["timeouts"] == 1


@pytest.mark.parametrize("name", ["r1_zero", "r1_zero_lenient", "gsm8k", "gsm8k_lenient", "math_lenient", "mcq"])
def test_builtin_verifiers_resolve(name):
    assert callable(resolve_verifier(name))


@pytest.mark.parametrize("response, strict, lenient", [
    ("The answer is 42 or 41", 0.0, 1.0),
    ("The answer is not 42.", 0.0, 1.0),
    ("The answer is 42.", 1.0, 1.0),
])
def test_gsm8k_verifier_strict_and_lenient(response, strict, lenient):
    assert resolve_verifier("gsm8k")(response, "42")["reward"] == strict
    assert resolve_verifier("gsm8k_lenient")(response, "42")["reward"] == lenient


def test_math_verifier_rejects_several_different_boxes():
    response = "so \\boxed{41} or rather \\boxed{42}"
    assert resolve_verifier("math")(response, "42")["reward"] == 0.0
    assert resolve_verifier("math_lenient")(response, "42")["reward"] == 1.0


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_scorer_pool_counts_in_real_ray_actors(ray_local):
    """The same through `ScorerPool`: RuleScorer Ray actors, whose workers fork from a Ray worker."""
    import ray

    from cdra.runtime.scorer import ScorerPool

    pool = ScorerPool("math", num_actors=1, timeout_s=3.0)
    try:
        results = pool.score([ScoreItem("\\boxed{\\frac{1}{2}}", "0.5"), ScoreItem("\\boxed{10^{10^{10^{10}}}}", "1"),
                              ScoreItem("\\boxed{3}", "3")])
        assert [r.score for r in results] == [1.0, 0.0, 1.0]
        assert pool.stats() == {"calls": 3, "errors": 0, "timeouts": 1}
    finally:
        for a in pool.actors:
            ray.kill(a)


def test_math_verifier_judges_the_answer_not_the_reasoning():
    response = "x is not 3 and not 5, so the value is \\boxed{42}"
    assert resolve_verifier("math")(response, "42")["reward"] == 1.0
    assert resolve_verifier("math")("\\boxed{42 \\text{ or } 41}", "42")["reward"] == 0.0
