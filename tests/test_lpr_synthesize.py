"""LPR synthesis, pure parts: prefix choice, MC labels, the rows `synthesize` builds from fixed
samples (a scripted engine; the real one runs in tests/test_lpr_synthesize_job.py), storage."""

from __future__ import annotations

import random

import pytest

from cdra.data.prompts import render_prompt
from cdra.data.synthetic import make_problem, to_example
from cdra.recipes.lpr_synthesize import (
    STATE_COLUMNS,
    SynthesisSettings,
    SynthesizeConfig,
    label_quality,
    read_states,
    synthesize,
    write_states,
)
from cdra.rewards.mc_labels import (
    choose_prefixes,
    first_prefix_step,
    full_value,
    hard_label,
    label_agreement,
    mc_value,
    prefix_candidates,
    prefix_rng,
    soft_label,
)
from cdra.runtime.rollout import Completion, SamplingConfig
from cdra.runtime.scorer import ScoreResult, resolve_verifier


def test_labels_of_a_fixed_case():
    assert mc_value([True, False, True]) == 2 and mc_value([]) == 0
    assert full_value(True, 3) == 3 and full_value(False, 3) == 0
    assert [hard_label(v) for v in range(4)] == [0, 1, 1, 1]
    assert [soft_label(v, 3) for v in range(4)] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    with pytest.raises(ValueError):
        soft_label(1, 0)
    # values 0..3 of K 3 against truths: hard says right from 1 on, soft (>= 0.5) from 2 on
    stats = label_agreement([0, 1, 2, 3, 1], [3] * 5, [False, False, True, True, True])
    assert stats["hard_agreement"] == pytest.approx(4 / 5)  # value 1 on a wrong state is the miss
    assert stats["soft_agreement"] == pytest.approx(4 / 5)  # value 1 on a right state is the miss
    assert stats["hard_wrong_labelled_wrong"] == pytest.approx(1 / 2) and stats["hard_right_labelled_right"] == 1.0
    assert stats["soft_wrong_labelled_wrong"] == 1.0 and stats["soft_right_labelled_right"] == pytest.approx(2 / 3)
    assert stats["truly_right_share"] == pytest.approx(3 / 5)
    assert label_agreement([], [], []) == {}


@pytest.mark.parametrize("steps, first", [(1, 1), (2, 1), (4, 1), (5, 1), (9, 1), (10, 2), (14, 2), (15, 3), (30, 6)])
def test_prefixes_start_at_a_fifth_of_the_steps(steps, first):
    assert first_prefix_step(steps, 0.2) == first
    assert list(prefix_candidates(steps, 0.2)) == list(range(first, steps))  # all steps is the full solution


def test_prefix_choice_is_reproducible_from_the_seed():
    def choice(seed: int, question: str, index: int) -> list[int]:
        return choose_prefixes(20, 0.4, 0.2, prefix_rng(seed, question, index))

    assert choice(3, "q7", 2) == choice(3, "q7", 2)
    assert all(min(choice(s, "q", i), default=4) >= 4 for s in range(5) for i in range(10))  # floor(0.2 * 20)
    draws = [choice(s, "q", i) for s in range(10) for i in range(10)]
    assert len({tuple(d) for d in draws}) > 50  # seeds and solutions draw differently
    kept = sum(len(d) for d in draws) / (len(draws) * 16)
    assert 0.33 < kept < 0.47  # each of the 16 candidates kept with probability 0.4
    assert choose_prefixes(20, 1.0, 0.2, random.Random(0)) == list(range(4, 20))


# ----------------------------------------------------------------------------- synthesize on scripted samples

EXAMPLE = to_example(make_problem(7, (("+", 4), ("-", 3)), id="q0"))  # 7 +4 -3: answer 8
SOLUTIONS = [" Step 1: 7+4=11\nStep 2: 11-3=8\nThe answer is 8.", " Step 1: 7+4=12\nStep 2: 12-3=9\nThe answer is 9."]
CONTINUATIONS = {  # prefix -> K 3 completions
    " Step 1: 7+4=11\n": ["Step 2: 11-3=8\nThe answer is 8.", "Step 2: 11-3=9\nThe answer is 9.", "Step 2: 11-3=8\nThe answer is 8."],
    " Step 1: 7+4=12\n": ["Step 2: 12-3=9\nThe answer is 9.", "Step 2: 12-3=9\nThe answer is 9.", "Step 2: 12-4=8\nThe answer is 8."],
}


class ScriptedEngines:
    def __init__(self, tokenizer, prompt: str) -> None:
        self.tokenizer, self.prompt = tokenizer, prompt

    def generate(self, prompts, sampling, n=1):
        out = []
        for ids in prompts:
            text = self.tokenizer.decode(ids)
            texts = SOLUTIONS[:n] if text == self.prompt else CONTINUATIONS[text[len(self.prompt):]][:n]
            out.append([Completion(list(ids), self.tokenizer(t, add_special_tokens=False).input_ids, None, t, "stop", 0) for t in texts])
        return out


class CheckedLocally:
    def score(self, items):
        verify = resolve_verifier("gsm8k")
        return [ScoreResult(verify(it.response, it.ground_truth)["reward"]) for it in items]


class ScriptedSession:
    version = 0

    def __init__(self) -> None:
        from transformers import AutoTokenizer

        from cdra.models.zoo import checkpoint_path

        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint_path("steps"))
        self.rollouts = ScriptedEngines(self.tokenizer, render_prompt("critique_rl_inference_short", question=EXAMPLE.question))
        self.scorers = CheckedLocally()

    def encode(self, text):
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def prompt(self, template, example):
        return render_prompt(template, question=example.question)


SETTINGS = SynthesisSettings(num_solutions=2, num_completions=3, keep_probability=1.0, sampling=SamplingConfig(temperature=0.7))


def test_synthesize_labels_states_from_their_completions():
    seen = []
    rows = synthesize(ScriptedSession(), [EXAMPLE], SETTINGS, seed=5, on_question_done=seen.append)
    assert seen == [rows]
    got = [(r["solution_index"], r["kind"], r["step_index"], r["num_steps"], r["value"], r["hard_label"], r["soft_label"], r["correct"])
           for r in rows]
    assert got == [(0, "prefix", 1, 2, 2, 1, 2 / 3, True), (0, "full", 2, 2, 3, 1, 1.0, True),
                   (1, "prefix", 1, 2, 1, 1, 1 / 3, False), (1, "full", 2, 2, 0, 0, 0.0, False)]
    prefix = rows[0]
    assert prefix["prefix"] == " Step 1: 7+4=11\n" and prefix["completions"] == CONTINUATIONS[" Step 1: 7+4=11\n"]
    assert prefix["completion_correct"] == [True, False, True] and prefix["response"] == SOLUTIONS[0]
    assert rows[1]["prefix"] == SOLUTIONS[0] and rows[1]["completions"] == []
    assert {r["k"] for r in rows} == {3} and {r["seed"] for r in rows} == {5} and {r["policy_version"] for r in rows} == {0}
    assert all(set(STATE_COLUMNS) <= set(r) for r in rows) and rows[0]["gold"] == "8" and rows[0]["question_id"] == "q0"

    # against the truth: the prefix "7+4=12" is wrong yet one completion recovers (hard says right)
    quality = label_quality(rows, SETTINGS.max_steps)
    assert quality["labels/prefix_hard_agreement"] == 0.5 and quality["labels/prefix_soft_agreement"] == 1.0
    assert quality["labels/all_hard_agreement"] == 0.75 and quality["labels/all_soft_agreement"] == 1.0
    assert quality["labels/prefix_states"] == 2 and quality["labels/unknown_truth_states"] == 0


def test_states_round_trip_through_parquet_shards(tmp_path):
    from datasets import load_dataset

    rows = synthesize(ScriptedSession(), [EXAMPLE], SETTINGS, seed=5)
    first, second = write_states(rows[:2], tmp_path), write_states(rows[2:], tmp_path)
    assert (first.name, second.name) == ("part-00000.parquet", "part-00001.parquet")
    assert read_states(tmp_path) == rows
    assert len(load_dataset("parquet", data_dir=str(tmp_path), split="train")) == 4  # a `datasets` directory
    assert not list(tmp_path.glob(".*tmp"))


def test_read_states_names_what_is_wrong(tmp_path):
    import pandas as pd

    with pytest.raises(ValueError, match="no process-reward shards"):
        read_states(tmp_path)
    pd.DataFrame({"question_id": ["q"], "value": [1]}).to_parquet(tmp_path / "part-00000.parquet")
    with pytest.raises(ValueError, match=r"missing columns \['prompt'"):
        read_states(tmp_path)


@pytest.mark.parametrize("override, message", [
    ({"num_solutions": 0}, "num_solutions must be > 0"),
    ({"num_completions": 0}, "num_completions must be > 0"),
    ({"keep_probability": 0.0}, r"keep_probability must be in \(0, 1\]"),
    ({"keep_probability": 1.5}, r"keep_probability must be in \(0, 1\]"),
    ({"min_step_fraction": 1.0}, "min_step_fraction"),
    ({"sampling": SamplingConfig(temperature=0.0)}, "temperature must be > 0"),
    ({"prompt_template": "nope"}, "unknown prompt template"),
])
def test_settings_errors(override, message):
    from cdra.config import ConfigError

    with pytest.raises((ConfigError, ValueError), match=message):
        SynthesisSettings(**override).validate()


def test_job_config_errors(tmp_path):
    from cdra.config import ConfigError, config_from_dict
    from cdra.recipes.lpr_synthesize import prepare

    with pytest.raises((ConfigError, ValueError), match="chunk_questions must be > 0"):
        config_from_dict(SynthesizeConfig, {"chunk_questions": 0})
    with pytest.raises((ConfigError, ValueError), match="synthesis.keep_probability"):
        config_from_dict(SynthesizeConfig, {"synthesis": {"keep_probability": 0}})
    out = tmp_path / "run"
    write_states(synthesize(ScriptedSession(), [EXAMPLE], SETTINGS, seed=5), out / "process_rewards")
    with pytest.raises(ValueError, match="run.resume=true continues"):
        prepare(config_from_dict(SynthesizeConfig, {"run": {"output_dir": str(out)}}))
