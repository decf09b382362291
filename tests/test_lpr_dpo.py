"""DPO and step-DPO (jobs/dpo.py): pair rules on hand cases, shared prefixes, the loss by hand, end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cdra.algos.dpo import attach_reference_logprobs, sequence_log_prob
from cdra.algos.experience import collate
from cdra.algos.preference_pairs import Scored, completion_pairs, pair_sample, ranked_pairs, solution_text_pairs, step_text_pairs
from cdra.recipes.dpo import DPOConfig, objective_of
from cdra.runtime.objectives import compute_loss


def test_ranked_pairs_top_correct_times_incorrect_plus_gap_pairs():
    # 12 correct solutions scored 0.95, 0.90, ..., 0.40 (index 0..11) and 12 incorrect (index 12..23)
    # scored 0.00, 0.05, ..., 0.55: the top 10 correct (0..9) each meet the 10 best-scored incorrect
    # (23 down to 14); correct pairs among the top 10 whose gap exceeds 0.4 (> 8 ranks of 0.05 apart)
    solutions = [Scored(i, True, 0.95 - 0.05 * i) for i in range(12)] + [Scored(12 + j, False, 0.05 * j) for j in range(12)]
    pairs = ranked_pairs(solutions, top_correct=10, max_incorrect=10, min_gap=0.4)
    versus = [(c, w) for c, w, kind in pairs if kind == "correct_vs_incorrect"]
    assert len(versus) == 100
    assert {c for c, _ in versus} == set(range(10)) and {w for _, w in versus} == set(range(14, 24))
    gap = {(c, w) for c, w, kind in pairs if kind == "score_gap"}
    assert gap == {(0, 9)}  # 0.95 - 0.50 = 0.45 > 0.4; (0, 8) and (1, 9) are 0.40 apart, not above


def test_ranked_pairs_few_incorrect_and_all_correct():
    few = [Scored(0, True, 0.9), Scored(1, True, 0.2), Scored(2, False, 0.7)]
    assert ranked_pairs(few) == [(0, 2, "correct_vs_incorrect"), (1, 2, "correct_vs_incorrect"), (0, 1, "score_gap")]
    assert ranked_pairs([Scored(0, True, 0.5), Scored(1, True, 0.3)]) == []  # gap 0.2: nothing to learn
    assert ranked_pairs([Scored(0, False, 0.5), Scored(1, False, 0.1)]) == []


def test_solution_text_pairs_drop_equal_texts_and_repeats():
    rows = [{"question_id": "q", "solution_index": i, "prompt": "P", "response": text, "correct": ok}
            for i, (text, ok) in enumerate([("a", True), ("a", True), ("b", False), ("c", False)])]
    scores = {("q", 0): 0.9, ("q", 1): 0.9, ("q", 2): 0.5, ("q", 3): 0.1}
    pairs = solution_text_pairs(rows, scores, top_correct=10, max_incorrect=10, min_gap=0.4)
    assert [(p.chosen, p.rejected) for p in pairs] == [("a", "b"), ("a", "c")]


def test_step_pairs_need_a_completion_either_way():
    assert completion_pairs([True, False, False], 2) == [(0, 1), (0, 2)]
    assert completion_pairs([True, True, False], 1) == [(0, 2)]
    assert completion_pairs([True, True, True], 2) == [] and completion_pairs([False] * 3, 2) == []
    rows = [{"question_id": "q", "kind": "prefix", "prompt": "P", "prefix": "Step 1: 1+2=3",
             "completions": ["\nStep 2: 3+4=7", "\nStep 2: 3+4=8", "\nStep 2: 3+4=9"], "completion_correct": [False, True, False]},
            {"question_id": "q", "kind": "full", "prompt": "P", "prefix": "x", "completions": [], "completion_correct": []}]
    pairs = step_text_pairs(rows, max_pairs_per_prefix=2)
    assert [(p.prefix, p.chosen, p.rejected) for p in pairs] == [("Step 1: 1+2=3", "\nStep 2: 3+4=8", "\nStep 2: 3+4=7"),
                                                                 ("Step 1: 1+2=3", "\nStep 2: 3+4=8", "\nStep 2: 3+4=9")]


def test_step_pair_shares_exactly_its_prefix_and_the_loss_covers_the_continuations():
    prompt, prefix, chosen, rejected = [5, 6, 7], [8, 9], [10, 11, 12], [13, 11]
    pair = pair_sample(prompt, prefix, chosen, rejected, eos_id=31)
    sides = [pair.prompt_ids + pair.response_ids, pair.prompt_ids + pair.rejected_ids]
    shared = next(i for i, (a, b) in enumerate(zip(*sides)) if a != b)
    assert shared == len(prompt) + len(prefix) and sides[0][:shared] == prompt + prefix
    batch = collate([pair], pad_id=0)
    # labels = full[1:]: the masks hold exactly the continuation tokens (and EOS), never the prefix
    chosen_mask = batch["response_mask"][0].bool()
    assert batch["labels"][0][chosen_mask].tolist() == chosen + [31]
    assert batch["rejected_labels"][0][batch["rejected_response_mask"][0].bool()].tolist() == rejected + [31]


def _tiny_lm(seed: int):
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=1)
    return transformers.Qwen2ForCausalLM(cfg).eval()


def test_recipe_dpo_loss_equals_hand_computation():
    """The recipe's pairs through collate and the learner's loss equal -log sigmoid of beta times
    the summed log-prob margins, computed sequence by sequence on the continuations only."""
    policy, reference = _tiny_lm(0), _tiny_lm(1)
    pairs = [pair_sample([1, 2, 3], [4, 5], [6, 7, 8], [9, 7], eos_id=31), pair_sample([1, 2], [], [3, 4], [5, 6, 7, 8], eos_id=31)]

    @torch.no_grad()
    def ref_logprobs(samples):
        return [[float(sequence_log_prob(reference, s.prompt_ids + s.response_ids[:j], [t])) for j, t in enumerate(s.response_ids)]
                for s in samples]

    attach_reference_logprobs(pairs, ref_logprobs)
    objective = objective_of(DPOConfig())
    assert objective.kind == "dpo" and objective.beta == 0.1
    with torch.no_grad():
        total, metrics = compute_loss(policy, collate(pairs, pad_id=0), objective)
        hand = 0.0
        for p in pairs:
            pi = float(sequence_log_prob(policy, p.prompt_ids, p.response_ids)) - float(sequence_log_prob(policy, p.prompt_ids, p.rejected_ids))
            ref = float(sequence_log_prob(reference, p.prompt_ids, p.response_ids)) - float(sequence_log_prob(reference, p.prompt_ids, p.rejected_ids))
            hand += math.log1p(math.exp(-0.1 * (pi - ref)))
    assert float(total) == pytest.approx(hand, rel=1e-5)
    assert metrics["loss"] == pytest.approx(hand / 2, rel=1e-5)


def test_config_errors_before_any_actor(tmp_path):
    from cdra.config import ConfigError, load_config
    from cdra.recipes.dpo import prepare

    with pytest.raises(ConfigError, match="needs prefix states"):
        load_config(DPOConfig, ["mode=step_dpo", "data_path=run/experience.parquet"])
    with pytest.raises(ConfigError, match="min_gap"):
        load_config(DPOConfig, ["min_gap=-1"])
    with pytest.raises(ConfigError, match="no process-reward shards"):
        prepare(load_config(DPOConfig, ["mode=step_dpo", f"data_path={tmp_path}"]))


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory) -> str:
    """A 4-class token classifier on the steps policy (an untrained head: a served PRM, not a good one)."""
    from cdra.models.heads import load_model, save_model
    from cdra.models.zoo import checkpoint_path

    directory = tmp_path_factory.mktemp("prm")
    save_model(load_model(checkpoint_path("steps"), head="classifier", num_labels=4), directory)
    return str(directory)


def _tiny(out, *extra: str) -> DPOConfig:
    from cdra.config import load_config

    return load_config(DPOConfig, [
        f"run.output_dir={out}", "run.checkpoint_every=0", "run.eval_every=100", "train_data.num_examples=12",
        "eval_data.num_examples=16", "synthesis.num_solutions=4", "synthesis.num_completions=3", "synthesis.keep_probability=1.0",
        "steps=6", "batch_size=8", "learner.micro_batch_size=8", "learner.lr=5e-5", *extra])


@pytest.mark.integration
@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", ["dpo", "step_dpo"])
def test_dpo_runs_end_to_end_and_the_loss_falls(tmp_path, prm_dir, mode):
    from cdra.recipes.dpo import prepare, run
    from cdra.runtime.tracking import read_metrics

    out = tmp_path / mode
    config = _tiny(out, f"mode={mode}", f"prm_path={prm_dir}")
    summary = run(config, prepare(config))
    assert summary["pairs/total"] > 0
    losses = [row["learner/loss"] for row in read_metrics(out / "metrics.jsonl") if "learner/loss" in row]
    assert len(losses) == 6 and losses[0] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference at the start
    assert sum(losses[-2:]) / 2 < losses[0]
    for tag in ("eval-step0", "eval-step6"):
        records = [json.loads(line) for line in (out / "eval" / f"{tag}.jsonl").read_text().splitlines()]
        assert len(records) == 16 and all("process_accuracy" in r for r in records)
    assert "eval/accuracy" in summary and "eval/accuracy_before" in summary
    assert (out / "final_model" / "config.json").exists()


def test_experience_rows_number_solutions_per_prompt(tmp_path):
    from transformers import AutoTokenizer

    from cdra.algos.experience import Sample
    from cdra.models.zoo import checkpoint_path
    from cdra.recipes.dpo import experience_rows
    from cdra.runtime.replay import samples_to_dataset

    tokenizer = AutoTokenizer.from_pretrained(checkpoint_path("steps"))
    ids = lambda text: tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
    samples = [Sample(ids("Q1"), ids("Step 1: 1+2=3"), prompt_id="a", reward=1.0, metadata={"correct": 1.0}),
               Sample(ids("Q1"), ids("Step 1: 1+2=4"), prompt_id="a", reward=0.7, metadata={"correct": 0.0}),
               Sample(ids("Q2"), ids("Step 1: 2+2=4"), prompt_id="b", reward=1.0)]
    path = tmp_path / "experience.parquet"
    samples_to_dataset(samples).to_parquet(str(path))
    rows = experience_rows(str(path), tokenizer)
    assert [(r["question_id"], r["solution_index"], r["correct"], r["response"]) for r in rows] == [
        ("a", 0, True, "Step 1: 1+2=3"), ("a", 1, False, "Step 1: 1+2=4"), ("b", 0, True, "Step 1: 2+2=4")]
    assert rows[0]["prompt"] == "Q1"
