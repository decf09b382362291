"""The guides' example files work as the guides say (pure: no actors start)."""

from __future__ import annotations

import sys

import pytest
from jobschema import REPO

from cdra.config import ConfigError, load_config
from cdra.runtime.scorer import RuleScorer, ScoreItem, resolve_verifier

EXAMPLES = REPO / "docs" / "examples"


@pytest.fixture
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))  # what PYTHONPATH=docs/examples does for a job
    yield
    for name in ("my_verifier", "min_recipe"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("response, truth, expected", [
    ("so 3 + 4 = 7. The answer is 7.", "7", {"reward": 1.0, "format_reward": 1.0, "answer_reward": 1.0}),
    ("The answer is 1,200", "1200", {"reward": 1.0, "format_reward": 1.0, "answer_reward": 1.0}),
    ("7 apples, so the answer is 8", "7", {"reward": 0.1, "format_reward": 1.0, "answer_reward": 0.0}),
    ("I do not know", "7", {"reward": 0.0, "format_reward": 0.0, "answer_reward": 0.0}),
    ("-2.5", "-2.50", {"reward": 1.0, "format_reward": 1.0, "answer_reward": 1.0}),
])
def test_example_verifier_through_resolve_verifier(examples_on_path, response, truth, expected):
    assert resolve_verifier("my_verifier:last_number")(response, truth) == expected


def test_example_verifier_in_a_rule_scorer(examples_on_path):
    scorer = RuleScorer("my_verifier:last_number", timeout_s=5.0)  # the scorer actor's body
    results = scorer.score([ScoreItem("the answer is 7", "7"), ScoreItem("the answer is 7", "not a number")])
    assert (results[0].score, results[0].details["answer_reward"], results[0].error) == (1.0, 1.0, None)
    assert results[1].score == 0.0 and "raised ValueError" in results[1].error  # float("not a number")
    assert scorer.stats() == {"calls": 2, "errors": 1, "timeouts": 0}


def test_unknown_verifiers_are_named():
    with pytest.raises(ValueError, match="cannot load verifier 'no_such_module:f'"):
        resolve_verifier("no_such_module:f")
    with pytest.raises(ValueError, match="unknown verifier 'last_number'"):
        resolve_verifier("last_number")


def test_minimal_recipe_config_loads_and_validates(examples_on_path):
    import min_recipe

    config = load_config(min_recipe.MinRecipeConfig, ["steps=2", "group_size=8", "learner.lr=1e-5"])
    assert (config.steps, config.group_size, config.learner.lr) == (2, 8, 1e-5)
    with pytest.raises(ConfigError, match="group_size must be >= 2"):
        load_config(min_recipe.MinRecipeConfig, ["group_size=1"])
