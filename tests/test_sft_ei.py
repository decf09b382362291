"""SFT and expert iteration: training targets and sample filtering (pure), and short real runs
(Ray, vLLM, DeepSpeed) of both recipes on the tiny model."""

from __future__ import annotations

import json
import math

import pytest

from cdra.algos.experience import Sample
from cdra.config import ConfigError, load_config
from cdra.data.example import TaskExample
from cdra.data.loaders import DatasetSpec, load_dataset_spec
from cdra.recipes import expert_iteration, sft
from cdra.rewards import r1_zero_reward_fn
from cdra.runtime.replay import load_export
from cdra.runtime.rollout import Completion
from cdra.runtime.scorer import ScoreResult
from cdra.runtime.tracking import read_metrics

# ----------------------------------------------------------------------------- SFT targets


def test_synthetic_r1_targets_are_verified_correct_even_after_shuffle_and_limit():
    spec = DatasetSpec(format="synthetic", split="train", num_examples=50, shuffle=True, seed=3, limit=10)
    pairs = sft.training_pairs(spec, list(load_dataset_spec(spec)), "r1_short", "auto")
    assert len(pairs) == 10
    for e in pairs:
        # the id -> problem mapping is right only if each target's steps end at this example's answer
        assert e.solution.startswith(" Step 1: ") and e.solution.endswith(f"</think> <answer>{e.answer}</answer>")
        assert r1_zero_reward_fn(e.solution, e.answer, fast=True)["reward"] == 1.0


def test_synthetic_steps_target_for_non_r1_template():
    spec = DatasetSpec(format="synthetic", split="test", num_examples=3)
    pairs = sft.training_pairs(spec, list(load_dataset_spec(spec)), "cdra_steps_short", "auto")
    assert all(e.solution.startswith(" Step 1: ") and e.solution.endswith(f"The answer is {e.answer}.") for e in pairs)


def test_real_solution_wrapped_for_r1_or_kept_as_is():
    example = TaskExample(id="q1", question="2+5?", answer="7", solution="2+5=7")
    assert sft.solution_target(example, "r1_zero", "auto") == " 2+5=7 </think> <answer>7</answer>"
    assert sft.solution_target(example, "question_only", "auto") == "2+5=7"
    assert sft.solution_target(example, "r1_short", "solution") == "2+5=7"
    assert sft.solution_target(example, "question_only", "r1") == " 2+5=7 </think> <answer>7</answer>"


def test_prompt_response_table_pairs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "Q: 1+1\nA:", "response": " 2"}, {"prompt": "Q: 2+2\nA:", "response": " Step 1: 2+2=4"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = DatasetSpec(format="table", path=str(path), question_key="prompt", answer_key="response", solution_key="response")
    pairs = sft.training_pairs(spec, list(load_dataset_spec(spec)), "question_only", "auto")
    assert [(e.question, e.solution) for e in pairs] == [("Q: 1+1\nA:", "2"), ("Q: 2+2\nA:", "Step 1: 2+2=4")]


def test_missing_solution_raises_naming_the_row_or_is_skipped_and_counted(tmp_path, capsys):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "a", "answer": "1", "sol": "x"}\n{"question": "b", "answer": "2"}\n')
    spec = DatasetSpec(format="table", path=str(path), solution_key=None)
    examples = [TaskExample(id="qa-0", question="a", answer="1", solution="x"), TaskExample(id="qa-1", question="b", answer="2")]
    with pytest.raises(ValueError, match="'qa-1'.*no solution"):
        sft.training_pairs(spec, examples, "question_only", "auto")
    skipping = DatasetSpec(format="table", path=str(path), on_error="skip")
    assert [e.id for e in sft.training_pairs(skipping, examples, "question_only", "auto")] == ["qa-0"]
    assert "skipped 1 examples without a solution" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no example has a solution"):
        sft.training_pairs(skipping, examples[1:], "question_only", "auto")


def test_table_train_data_needs_solution_key(tmp_path):
    (tmp_path / "t.jsonl").write_text("")
    with pytest.raises(ConfigError, match="solution_key"):
        load_config(sft.SFTConfig, [f"train_data.path={tmp_path / 't.jsonl'}", "train_data.format=table"])


def test_sft_sample_truncates_the_response_to_max_seq_len():
    s = sft.sft_sample([1, 2, 3], [4, 5, 6, 7, 8], "e", 0, 0, max_seq_len=6)
    assert s.response_ids == [4, 5, 6]
    with pytest.raises(ValueError, match="'e'.*no room"):
        sft.sft_sample([1, 2, 3], [4], "e", 0, 0, max_seq_len=3)


def test_steps_from_epochs_and_eval_verifier():
    config = load_config(sft.SFTConfig, ["steps=0", "epochs=2", "batch_size=64"])
    assert sft.total_steps(config, 100) == 4  # ceil(2 * 100 / 64)
    assert sft.total_steps(load_config(sft.SFTConfig, ["steps=7"]), 100) == 7
    assert sft.eval_verifier(config, []) == "r1_zero"
    steps = load_config(sft.SFTConfig, ["prompt_template=cdra_steps_short"])
    assert sft.eval_verifier(steps, [TaskExample(id="m", question="q", answer="1", kind="math")]) == "math"


# ----------------------------------------------------------------------------- EI filtering


def _completion(text: str, ids: list[int]) -> Completion:
    return Completion([9, 9], ids, [-0.5] * len(ids), text, "stop", 2)


def test_to_samples_and_keep_correct():
    examples = [TaskExample(id="a", question="q", answer="1"), TaskExample(id="b", question="q", answer="2")]
    groups = [[_completion("x", [1]), _completion("y", [2, 3])], [_completion("z", [4]), _completion("", [])]]
    results = [ScoreResult(1.0), ScoreResult(0.0), ScoreResult(1.0, {"format_reward": 1.0}), ScoreResult(1.0)]
    samples = expert_iteration.to_samples(examples, groups, results, step=3, scorer_version=5)
    assert [(s.prompt_id, s.group_id, s.reward) for s in samples] == [("a", 300_000, 1.0), ("a", 300_000, 0.0),
                                                                       ("b", 300_001, 1.0), ("b", 300_001, 1.0)]
    assert samples[2].metadata == {"response_text": "z", "ground_truth": "2", "format_reward": 1.0}
    kept = expert_iteration.keep_correct(samples)
    assert [s.response_ids for s in kept] == [[1], [4]]  # the empty response is never imitated
    with pytest.raises(ValueError, match="4 completions but 3 scores"):
        expert_iteration.to_samples(examples, groups, results[:3], 0, 0)


def test_keep_correct_needs_exactly_full_reward():
    samples = [Sample([1], [2], reward=r) for r in (1.0, 0.999, 0.0, 1.0)]
    assert len(expert_iteration.keep_correct(samples)) == 2


@pytest.mark.parametrize("kept,batch,ranks,expected", [(10, 4, 1, 3), (3, 64, 2, 1), (1, 1, 2, 1), (5, 1, 2, 3), (128, 64, 2, 2)])
def test_sft_optimizer_steps(kept, batch, ranks, expected):
    assert expert_iteration.sft_optimizer_steps(kept, batch, ranks) == expected


# ----------------------------------------------------------------------------- real runs


def _common(out) -> list[str]:
    return ["num_rollout_workers=1", "learner.num_ranks=1", "num_scorers=1", "eval_data.num_examples=4",
            f"run.output_dir={out}", "run.use_wandb=false", "run.eval_every=100"]


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_sft_from_scratch_lowers_loss_and_saves_model(tmp_path, ray_local):
    out = tmp_path / "sft"
    config = load_config(sft.SFTConfig, ["steps=3", "batch_size=16", "learner.micro_batch_size=8", *_common(out)])
    summary = sft.run(config)
    rows = read_metrics(out / "metrics.jsonl")
    losses = [r["learner/loss"] for r in rows]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert losses[-1] < losses[0], losses
    assert [r["policy/version"] for r in rows] == [1.0, 2.0, 3.0]
    assert (out / "final_model" / "config.json").exists()
    assert "eval/reward" in summary and "eval/reward_before" in summary


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_expert_iteration_trains_only_on_verified_samples(tmp_path, r1_model, ray_local):
    out = tmp_path / "ei"
    config = load_config(expert_iteration.ExpertIterationConfig, [
        f"model_path={r1_model}", "steps=2", "questions_per_step=8", "samples_per_question=4", "sft_batch_size=8",
        "run.checkpoint_every=0", *_common(out)])
    summary = expert_iteration.run(config)
    rows = read_metrics(out / "metrics.jsonl")
    kept = [int(r["ei/kept"]) for r in rows]
    assert [r["step"] for r in rows] == [1, 2]
    assert 0 < sum(kept) < 2 * 8 * 4, kept  # something verified, something rejected
    norms = [r["learner/grad_norm"] for r in rows if r["ei/kept"] > 0]
    assert norms and all(math.isfinite(n) and n > 0 for n in norms)  # ZeRO 0: read off the local grads
    exported = load_export(str(out / "experience.parquet"))
    assert len(exported) == sum(kept)
    for s in exported:
        assert s.reward == 1.0
        assert r1_zero_reward_fn(s.metadata["response_text"], s.metadata["ground_truth"], fast=True)["reward"] == 1.0
    assert summary["policy/version"] == sum(k > 0 for k in kept)
    assert (out / "final_model" / "config.json").exists()
    assert "eval/reward" in summary
