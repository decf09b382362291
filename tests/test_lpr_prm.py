"""train_prm: PRM examples label exactly the step-end tokens (pure); on tiny settings the prm
loss falls through the learner group and the written directory is served by PRMPool."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from cdra.algos.experience import IGNORE_LABEL
from cdra.data.prompts import render_prompt
from cdra.data.synthetic import corrupt_steps, format_steps_solution, judge_steps, make_problems
from cdra.rewards.judging import steps_splitter


def ground_truth_states(num_problems: int, k: int = 3, seed: int = 0) -> list[dict]:
    """States in the synthesize job's schema whose value is K when every step so far is right,
    else 0 (ground truth in place of completions): a correct and a corrupted solution per problem."""
    from cdra.recipes.common import synthetic_spec

    spec = synthetic_spec("train", num_problems)
    rng = random.Random(seed)
    rows = []
    for p in make_problems(num_problems, seed, spec.synthetic_config(), "train"):
        prompt = render_prompt("critique_rl_inference_short", question=p.question)
        for index, steps in enumerate((p.steps, corrupt_steps(p, rng)[0])):
            response = " " + format_steps_solution(p, steps)
            right = judge_steps(p, steps)
            spans = steps_splitter()(response)
            base = {"question_id": p.id, "prompt": prompt, "gold": str(p.answer), "solution_index": index, "num_steps": len(steps),
                    "response": response, "correct": all(right), "policy_version": 0, "k": k, "seed": seed}
            for step in range(1, len(steps)):
                value = k * all(right[:step])
                rows.append({**base, "kind": "prefix", "step_index": step, "prefix": response[: spans[step][0]],
                             "completions": [], "completion_correct": [], "value": value, "hard_label": int(value > 0),
                             "soft_label": value / k})
            value = k * all(right)
            rows.append({**base, "kind": "full", "step_index": len(steps), "prefix": response, "completions": [],
                         "completion_correct": [], "value": value, "hard_label": int(value > 0), "soft_label": value / k})
    return rows


def write_rows(rows: list[dict], directory: Path) -> Path:
    """The states as the synthesize job writes them (one shard)."""
    from cdra.recipes.lpr_synthesize import write_states

    write_states(rows, directory)
    return directory


class ByteTokenizer:
    """One token per character: a step's last token is its last character."""

    def __call__(self, text: str, add_special_tokens: bool = False):
        return type("Enc", (), {"input_ids": [ord(c) for c in text]})

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids)


def test_state_labels_sit_on_the_last_step_end_token():
    from cdra.recipes.train_prm import state_examples

    prefix = " Step 1: 2-1=1\nStep 2: 1+3=4\n"
    rows = [{"question_id": "q", "kind": "prefix", "step_index": 2, "prompt": "Q: x\nA:", "prefix": prefix, "value": 2, "k": 3},
            {"question_id": "q", "kind": "full", "step_index": 2, "prompt": "Q: x\nA:", "prefix": prefix + "The answer is 4.",
             "value": 3, "k": 3},
            {"question_id": "r", "kind": "full", "step_index": 1, "prompt": "Q: x\nA:", "prefix": "", "value": 0, "k": 3}]
    samples, dropped = state_examples(rows, ByteTokenizer(), steps_splitter(), max_seq_len=512)
    assert dropped == 1  # an empty response holds no step
    prefix_sample, full_sample = samples
    # the prefix's last step "Step 2: 1+3=4\n" ends at its newline, the prefix's last character
    assert prefix_sample.token_labels == [IGNORE_LABEL] * (len(prefix) - 1) + [2]
    assert prefix_sample.response_ids == [ord(c) for c in prefix]
    # a full solution's last step runs through the answer line (PRMPool reads it there too)
    full = prefix + "The answer is 4."
    assert full_sample.token_labels == [IGNORE_LABEL] * (len(full) - 1) + [3]
    assert sum(label != IGNORE_LABEL for label in full_sample.token_labels) == 1


def test_states_too_long_are_dropped_and_k_is_checked():
    from cdra.config import ConfigError
    from cdra.recipes.train_prm import check_states, state_examples

    rows = ground_truth_states(2)
    samples, dropped = state_examples(rows, ByteTokenizer(), steps_splitter(), max_seq_len=40)
    assert dropped == sum(len(r["prompt"]) + len(r["prefix"]) > 40 for r in rows) and len(samples) == len(rows) - dropped
    assert check_states(rows, 4) == 3
    with pytest.raises(ConfigError, match="num_labels must be K \\+ 1 = 4"):
        check_states(rows, 3)
    with pytest.raises(ConfigError, match="value 7 outside 0..3"):
        check_states(rows[:1] + [{**rows[1], "value": 7}], 4)


def test_ground_truth_states_hand_case():
    rows = ground_truth_states(1)
    correct = [r for r in rows if r["solution_index"] == 0]
    assert {r["value"] for r in correct} == {3}
    wrong_full = next(r for r in rows if r["solution_index"] == 1 and r["kind"] == "full")
    assert wrong_full["value"] == 0 and not wrong_full["correct"]


def test_config_errors_before_any_actor(tmp_path):
    from cdra.config import ConfigError, load_config
    from cdra.recipes.train_prm import TrainPRMConfig, prepare

    with pytest.raises(ConfigError, match="states_dir: .*no process-reward shards"):
        prepare(load_config(TrainPRMConfig, [f"states_dir={tmp_path}"]))
    with pytest.raises(ConfigError, match="threshold_class"):
        load_config(TrainPRMConfig, ["threshold_class=4"])
    with pytest.raises(ConfigError, match="learner.head must be classifier"):
        load_config(TrainPRMConfig, ["learner.head=lm"])


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_prm_loss_falls_resumes_and_the_written_prm_is_served(tmp_path):
    from cdra.config import load_config
    from cdra.recipes.train_prm import TrainPRMConfig, prepare, run
    from cdra.runtime.tracking import read_metrics

    states = write_rows(ground_truth_states(48), tmp_path / "states")
    out = tmp_path / "run"
    args = [f"states_dir={states}", f"run.output_dir={out}", "run.use_wandb=false", "run.checkpoint_every=0", "steps=12",
            "batch_size=32", "learner.micro_batch_size=32", "learner.lr=2e-3", "best_of=4", "eval_data.num_examples=8"]
    config = load_config(TrainPRMConfig, args + ["run.stop_after=6"])
    run(config, prepare(config))
    assert not (out / "final_model").exists()  # stopped, as if interrupted
    config = load_config(TrainPRMConfig, args + ["run.resume=true"])
    summary = run(config, prepare(config))
    assert summary["resume/saved_checksum"] == summary["resume/loaded_checksum"]
    losses = [row["learner/loss"] for row in read_metrics(out / "metrics.jsonl") if "learner/loss" in row]
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3
    # the evaluation served <output_dir>/prm with PRMPool: every step scored, none failed
    assert len(json.loads((out / "prm" / "config.json").read_text())["id2label"]) == 4
    assert summary["prm_eval/errors"] == 0 and summary["prm/items"] > 8
    assert 0.0 <= summary["best_of_4/random"] <= summary["best_of_4/oracle"] <= 1.0
    assert (out / "final_model" / "config.json").exists()
