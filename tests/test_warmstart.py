import dataclasses
import json
import random

import pytest
import torch

from cdra.data.synthetic import SyntheticConfig, make_problem, make_problems
from cdra.models.tiny import build_tiny_model
from cdra.models.warmstart import (
    DEFAULT_STEPS,
    WarmStartConfig,
    _loss_weights,
    _lr_factor,
    _mark_label_positions,
    _score,
    _train,
    _training_examples,
    critic_responses,
    evaluate_accuracy,
    task_example,
    untagged_r1_example,
    warm_start,
)

PROBLEM = make_problem(3, [("+", 4), ("*", 2)])  # 3+4=7, 7*2=14


def test_task_examples_hand_written():
    r1 = task_example("r1", PROBLEM)
    assert r1.prompt == "User: Start with 3. Add 4. Multiply by 2.\nAssistant: <think>"
    assert r1.target == " Step 1: 3+4=7. Step 2: 7*2=14. </think> <answer>14</answer>"
    steps = task_example("steps", PROBLEM)
    assert steps.prompt == "Q: Start with 3. Add 4. Multiply by 2.\nA:"
    assert steps.target == " Step 1: 3+4=7\nStep 2: 7*2=14\nThe answer is 14."
    critic = task_example("critic", PROBLEM)
    assert critic.original_correct is True
    assert critic.prompt == (
        "Q: Start with 3. Add 4. Multiply by 2.\nA: Step 1: 3+4=7\nStep 2: 7*2=14\nThe answer is 14.\nCritique:"
    )
    assert critic.target.startswith(" Step sentence: 3+4=7; recomputed 3+4=7; last digits 7 vs 7: same\nCorrectness of the step: Correct\n")
    assert critic.target.endswith("Correctness of the final answer: Correct")


def test_corrupted_critic_example_is_labelled_wrong():
    example = task_example("critic", PROBLEM, corrupt=True, rng=random.Random(1))
    assert example.original_correct is False
    assert "The answer is 14." not in example.prompt
    assert example.target.endswith("Correctness of the final answer: Wrong")


def test_critic_responses_alternate_correct_and_corrupted():
    problems = make_problems(5, 0, SyntheticConfig(), "test")
    items = critic_responses(problems)
    assert [e.original_correct for e in items] == [True, False, True, False, True]
    assert critic_responses(problems) == items  # deterministic


def test_score_r1_cuts_at_stop_and_grades():
    example = task_example("r1", PROBLEM)
    assert _score("r1", example, " Step 1: 3+4=7. </think> <answer>14</answer> <answer>9</answer>") == (1.0, 1.0, "14")
    assert _score("r1", example, " </think> <answer>13</answer>") == (0.0, 1.0, "13")
    assert _score("r1", example, " Step 1: 3+4=7. <answer>14</answer>") == (0.0, 0.0, None)


def test_score_steps_and_critic():
    assert _score("steps", task_example("steps", PROBLEM), " Step 1: 3+4=7\nThe answer is 14.") == (1.0, 1.0, "14")
    assert _score("steps", task_example("steps", PROBLEM), " Step 1: 3+4=8") == (0.0, 0.0, "8")
    wrong = task_example("critic", PROBLEM, corrupt=True, rng=random.Random(0))
    assert _score("critic", wrong, "Correctness of the final answer: Wrong") == (1.0, 1.0, "False")
    assert _score("critic", wrong, "Correctness of the final answer: Correct") == (0.0, 1.0, "True")
    assert _score("critic", wrong, "Correctness of the step: Wrong") == (0.0, 0.0, None)


def test_lr_factor_warmup_then_cosine_to_a_tenth():
    assert _lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert _lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert _lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert _lr_factor(55, 100, 10) == pytest.approx(0.55)  # halfway through the decay
    assert _lr_factor(100, 100, 10) == pytest.approx(0.1)


def test_config_defaults_digest_and_validation():
    assert WarmStartConfig(task="critic").steps == DEFAULT_STEPS["critic"]
    assert WarmStartConfig().digest() == WarmStartConfig(steps=DEFAULT_STEPS["r1"]).digest()
    assert WarmStartConfig().digest() != WarmStartConfig(steps=DEFAULT_STEPS["r1"] + 1).digest()
    assert WarmStartConfig().digest() != WarmStartConfig(task="steps").digest()
    with pytest.raises(ValueError, match="task"):
        WarmStartConfig(task="policy")
    with pytest.raises(ValueError, match="batch_size"):
        WarmStartConfig(batch_size=0)
    with pytest.raises(ValueError, match="lr"):
        WarmStartConfig(lr=0.0)
    with pytest.raises(ValueError, match="untagged_fraction"):
        WarmStartConfig(untagged_fraction=1.5)
    # only r1 reads untagged_fraction: the other tasks' digests (and caches) ignore it
    assert WarmStartConfig(untagged_fraction=0.2).digest() != WarmStartConfig().digest()
    assert WarmStartConfig(task="steps", untagged_fraction=0.2).digest() == WarmStartConfig(task="steps").digest()
    # likewise only the critic reads mark_weight
    assert WarmStartConfig(task="critic", mark_weight=1.0).digest() != WarmStartConfig(task="critic").digest()
    assert WarmStartConfig(mark_weight=1.0).digest() == WarmStartConfig().digest()
    with pytest.raises(ValueError, match="mark_weight"):
        WarmStartConfig(task="critic", mark_weight=0.5)
    # the critic stops early by default; a task that never checks keeps its digest whatever the check settings
    assert WarmStartConfig(task="critic").stop_at_accuracy == 0.7 and WarmStartConfig().stop_at_accuracy == 0.0
    assert WarmStartConfig(stop_check_every=7).digest() == WarmStartConfig().digest()
    assert WarmStartConfig(task="critic", stop_check_every=7).digest() != WarmStartConfig(task="critic").digest()
    assert WarmStartConfig(task="critic", stop_at_accuracy=0.0).digest() != WarmStartConfig(task="critic").digest()
    with pytest.raises(ValueError, match="stop_at_accuracy"):
        WarmStartConfig(stop_at_accuracy=1.5)
    with pytest.raises(ValueError, match="stop_check_every"):
        WarmStartConfig(stop_check_every=0)


def test_train_stops_at_the_first_check_reaching_the_target():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_model()
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    config = WarmStartConfig(task="steps", steps=12, batch_size=2, num_examples=8, stop_at_accuracy=0.5, stop_check_every=3)
    scores = iter([0.1, 0.4, 0.5, 0.9])
    losses, checks = _train(model, tokenizer, _training_examples(config), config, lambda: next(scores))
    assert checks == [(3, 0.1), (6, 0.4), (9, 0.5)]
    assert len(losses) == 9 and not model.training
    never = dataclasses.replace(config, stop_at_accuracy=0.0)  # no target: no checks, every step
    losses, checks = _train(model, tokenizer, _training_examples(never), never, lambda: 1.0)
    assert checks == [] and len(losses) == 12


def test_mark_positions_point_at_the_comparison_outcomes():
    from transformers import AutoTokenizer

    from cdra.algos import tokenize_prompt_and_output

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_model())
    example = task_example("critic", PROBLEM, corrupt=True, rng=random.Random(1))
    positions = _mark_label_positions(tokenizer, example)
    labels = tokenize_prompt_and_output([example.prompt], [example.target], tokenizer)["labels"][0]
    assert [tokenizer.decode([int(labels[i])]) for i in positions] == ["D", "s"]  # DIFFERENT, then same

    mask = torch.tensor([[False, True, True, True], [False, False, True, False]])
    weights = _loss_weights(mask, [[2], []], 20.0)
    assert weights.tolist() == [[0.0, 1.0, 20.0, 1.0], [0.0, 0.0, 1.0, 0.0]]


def test_untagged_r1_examples_score_zero_and_follow_the_fraction():
    example = untagged_r1_example(PROBLEM)
    assert example.target == " Step 1: 3+4=7. Step 2: 7*2=14. </think> The answer is 14."
    assert _score("r1", example, example.target)[:2] == (0.0, 0.0)  # right answer, unrewarded form
    assert _score("r1", example, task_example("r1", PROBLEM).target)[:2] == (1.0, 1.0)
    config = WarmStartConfig(num_examples=400, untagged_fraction=0.3)
    untagged = [e for e in _training_examples(config) if "<answer>" not in e.target]
    assert 0.22 < len(untagged) / 400 < 0.38
    assert not any("<answer>" not in e.target for e in _training_examples(WarmStartConfig(num_examples=100, untagged_fraction=0.0)))


def test_evaluate_accuracy_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="task"):
        evaluate_accuracy(tmp_path, "policy", [PROBLEM])
    with pytest.raises(ValueError, match="at least one problem"):
        evaluate_accuracy(tmp_path, "r1", [])
    with pytest.raises(ValueError, match="temperature"):
        evaluate_accuracy(tmp_path, "r1", [PROBLEM], num_samples=4)


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_warm_start_learns_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CDRA_CACHE", str(tmp_path))
    config = WarmStartConfig(task="r1", steps=60, batch_size=16, num_examples=256, eval_problems=16, warmup_steps=5,
                             untagged_fraction=0.0)
    problems = make_problems(16, 0, config.synthetic, "test")
    before = evaluate_accuracy(build_tiny_model(config.model), "r1", problems)

    path = warm_start(config)
    assert path == tmp_path / "warmstart" / f"r1-{config.digest()}"
    assert (path / "config.json").exists() and (path / "tokenizer.json").exists()
    record = json.loads((path / "warmstart.json").read_text())
    assert record["digest"] == config.digest()
    assert record["config"]["steps"] == 60
    assert record["final_loss"] < 0.5 * record["initial_loss"]
    after = record["heldout"]
    assert after["num_problems"] == 16
    assert after["accuracy"] >= before["accuracy"]
    assert after["format_rate"] > before["format_rate"]  # the r1 format is learned first

    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert warm_start(config) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp


def test_digest_follows_the_target_format(monkeypatch):
    """A changed critique format must not reuse a critic (or refiner) cached under the old one."""
    import cdra.models.refiner as refiner
    import cdra.models.warmstart as warmstart

    critic, actor = WarmStartConfig(task="critic").digest(), refiner.RefinerConfig().digest()
    steps = WarmStartConfig(task="steps").digest()
    original = warmstart.critique_text
    original_untagged = warmstart.untagged_r1_example
    monkeypatch.setattr(warmstart, "critique_text", lambda *a, **k: original(*a, **k).replace("Step sentence", "Step"))
    monkeypatch.setattr(refiner, "critique_text", lambda *a, **k: original(*a, **k).replace("Step sentence", "Step"))
    assert WarmStartConfig(task="critic").digest() != critic
    assert refiner.RefinerConfig().digest() != actor
    assert WarmStartConfig(task="steps").digest() == steps  # its targets hold no critique

    r1 = WarmStartConfig().digest()
    monkeypatch.setattr(warmstart, "untagged_r1_example", lambda p: dataclasses.replace(original_untagged(p), target=" other form"))
    assert WarmStartConfig().digest() != r1
