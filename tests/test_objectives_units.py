"""The dpo, ppo and prm objectives' pure parts, against hand computations.

The "models" here are bigram tables (an Embedding from token to next-token logits, or to class
logits): every log-prob a loss uses can then be read off the table by hand.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from cdra.algos.dpo import attach_reference_logprobs, diverging_masks
from cdra.algos.experience import IGNORE_LABEL, Sample, collate, split_microbatches
from cdra.algos.value import outcome_token_rewards, prm_token_losses
from cdra.runtime import objectives
from cdra.runtime.learner import LearnerConfig
from cdra.runtime.objectives import Objective

VOCAB = 16


class Bigram(torch.nn.Module):
    """logits[t] = table[input_ids[t]]: a causal LM (or token classifier) readable by hand."""

    def __init__(self, width: int = VOCAB, seed: int = 0) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(VOCAB, width)
        with torch.no_grad():
            self.table.weight.copy_(torch.randn(VOCAB, width, generator=torch.Generator().manual_seed(seed)))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> SimpleNamespace:
        return SimpleNamespace(logits=self.table(input_ids))

    def logp(self, prev: int, nxt: int) -> float:
        return float(torch.log_softmax(self.table.weight[prev].detach(), -1)[nxt])


def _pairs() -> list[Sample]:
    return [
        Sample(prompt_ids=[1, 2], response_ids=[3, 4, 5], rejected_ids=[3, 6], ref_logprobs=[-1.0, -2.0, -0.5],
               rejected_ref_logprobs=[-1.0, -0.25]),
        Sample(prompt_ids=[7], response_ids=[8], rejected_ids=[9, 10, 11], ref_logprobs=[-0.3],
               rejected_ref_logprobs=[-1.5, -0.5, -2.0]),
    ]


def _sequence_logp(model: Bigram, prompt: list[int], response: list[int], skip: int = 0) -> float:
    full = prompt + response
    return sum(model.logp(full[len(prompt) + j - 1], full[len(prompt) + j]) for j in range(skip, len(response)))


def _hand_dpo(pi_c: float, pi_r: float, ref_c: float, ref_r: float, beta: float, eps: float = 0.0) -> float:
    margin = beta * ((pi_c - ref_c) - (pi_r - ref_r))
    log_sig = lambda x: -math.log1p(math.exp(-x))  # noqa: E731
    return -(1 - eps) * log_sig(margin) - eps * log_sig(-margin)


@pytest.mark.parametrize("beta,eps", [(0.1, 0.0), (2.0, 0.0), (0.5, 0.2)])
def test_dpo_loss_equals_the_hand_computation(beta, eps):
    model, pairs = Bigram(), _pairs()
    loss, metrics = objectives.compute_loss(model, collate(pairs, 0), Objective(kind="dpo", beta=beta, label_smoothing=eps))
    expected = [_hand_dpo(_sequence_logp(model, p.prompt_ids, p.response_ids), _sequence_logp(model, p.prompt_ids, p.rejected_ids),
                          sum(p.ref_logprobs), sum(p.rejected_ref_logprobs), beta, eps) for p in pairs]
    assert float(loss.detach()) == pytest.approx(sum(expected), abs=1e-5)
    assert metrics["loss"] == pytest.approx(sum(expected) / 2, abs=1e-5)


def test_step_dpo_scores_only_where_the_responses_diverge():
    model = Bigram()
    pair = Sample(prompt_ids=[1, 2], response_ids=[3, 4, 5, 6], rejected_ids=[3, 4, 9], ref_logprobs=[-1.0, -2.0, -0.5, -0.1],
                  rejected_ref_logprobs=[-1.0, -2.0, -3.0])
    loss, _ = objectives.compute_loss(model, collate([pair], 0), Objective(kind="dpo", beta=0.7, shared_prefix="skip"))
    # the shared prefix [3, 4] drops out of the policy and the reference sums alike
    expected = _hand_dpo(_sequence_logp(model, [1, 2], [3, 4, 5, 6], skip=2), _sequence_logp(model, [1, 2], [3, 4, 9], skip=2),
                         -0.5 - 0.1, -3.0, 0.7)
    assert float(loss.detach()) == pytest.approx(expected, abs=1e-5)


def test_step_dpo_equals_dpo_with_the_shared_prefix_in_the_prompt():
    model = Bigram(seed=1)
    step = Sample(prompt_ids=[1, 2], response_ids=[3, 4, 5, 6], rejected_ids=[3, 4, 9, 10], ref_logprobs=[-9.0, -9.0, -0.5, -0.1],
                  rejected_ref_logprobs=[-7.0, -7.0, -3.0, -1.0])
    moved = Sample(prompt_ids=[1, 2, 3, 4], response_ids=[5, 6], rejected_ids=[9, 10], ref_logprobs=[-0.5, -0.1],
                   rejected_ref_logprobs=[-3.0, -1.0])
    skip, _ = objectives.compute_loss(model, collate([step], 0), Objective(kind="dpo", shared_prefix="skip"))
    plain, _ = objectives.compute_loss(model, collate([moved], 0), Objective(kind="dpo"))
    assert float(skip.detach()) == pytest.approx(float(plain.detach()), abs=1e-6)


def test_diverging_masks_exact():
    labels_c = torch.tensor([[0, 3, 4, 5, 6, 0], [0, 3, 4, 0, 0, 0]])
    mask_c = torch.tensor([[0, 1, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0]])
    labels_r = torch.tensor([[0, 3, 4, 9, 0, 0], [0, 3, 4, 7, 0, 0]])
    mask_r = torch.tensor([[0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 0, 0]])
    chosen, rejected = diverging_masks(labels_c, mask_c, labels_r, mask_r)
    assert chosen.tolist() == [[0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0]]  # row 2: chosen is a prefix of rejected
    assert rejected.tolist() == [[0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 0, 0]]


def test_pairs_collate_as_one_row_each_and_microbatches_keep_the_longer_side():
    batch = collate(_pairs(), 0)
    assert batch["input_ids"].shape == batch["rejected_input_ids"].shape == (2, 4)
    assert batch["rejected_labels"][1].tolist() == [9, 10, 11, 0]
    assert batch["rejected_ref_logprobs"][1].tolist() == [-1.5, -0.5, -2.0, 0.0]
    assert batch["ref_logprobs"][0].tolist() == [0.0, -1.0, -2.0, -0.5]  # from label position len(prompt) - 1
    assert batch["rejected_response_mask"][0].tolist() == [0, 1, 1, 0]
    second = split_microbatches(batch, 1)[1]
    assert second["input_ids"].shape[1] == 3  # the chosen side needs 1 column, the rejected 3
    with pytest.raises(ValueError, match="pairs only or none"):
        collate(_pairs() + [Sample(prompt_ids=[1], response_ids=[2])], 0)
    with pytest.raises(ValueError, match="rejected_ref_logprobs has 1 entries for 2"):
        Sample(prompt_ids=[1], response_ids=[2], rejected_ids=[3, 4], rejected_ref_logprobs=[0.0]).validate()


def test_attach_reference_logprobs_scores_both_sides_in_one_call():
    calls = []

    def scorer(samples):
        calls.append(len(samples))
        return [[float(t) for t in s.response_ids] for s in samples]

    pairs = [Sample(prompt_ids=[1], response_ids=[2, 3], rejected_ids=[4]) for _ in range(3)]
    attach_reference_logprobs(pairs, scorer)
    assert calls == [6]
    assert pairs[0].ref_logprobs == [2.0, 3.0] and pairs[0].rejected_ref_logprobs == [4.0]


def test_dpo_without_reference_logprobs_says_how_to_get_them():
    pairs = [Sample(prompt_ids=[1], response_ids=[2], rejected_ids=[3])]
    with pytest.raises(ValueError, match="attach_reference_logprobs"):
        objectives.compute_loss(Bigram(), collate(pairs, 0), Objective(kind="dpo"))


def test_prm_loss_is_cross_entropy_at_the_labelled_tokens_read_after_them():
    classifier = Bigram(width=3)
    samples = [Sample(prompt_ids=[1, 2], response_ids=[3, 4, 5], token_labels=[IGNORE_LABEL, 2, 0]),
               Sample(prompt_ids=[6], response_ids=[7, 8], token_labels=[1, IGNORE_LABEL])]
    batch = collate(samples, 0)
    # a token's class logits are read where the model has read it: table[token]
    logits = objectives.prm_logits(classifier, batch)
    assert torch.equal(logits[0, 1:4], classifier.table.weight[[3, 4, 5]])
    loss, _ = objectives.compute_loss(classifier, batch, Objective(kind="prm"))
    table = torch.log_softmax(classifier.table.weight.detach(), -1)
    expected = -(table[4, 2] + table[5, 0] + table[7, 1])
    assert float(loss.detach()) == pytest.approx(float(expected), abs=1e-5)
    assert objectives.loss_units(batch, Objective(kind="prm")) == 3
    with pytest.raises(ValueError, match="step label 3 is outside 0..2"):
        prm_token_losses(torch.zeros(1, 2, 3), torch.tensor([[IGNORE_LABEL, 3]]))


def test_loss_units_leave_zero_weight_fillers_out():
    samples = [Sample(prompt_ids=[1, 2], response_ids=[3, 4, 5]), Sample(prompt_ids=[1], response_ids=[3, 4])]
    filler = Sample(prompt_ids=[1], response_ids=[3, 4, 5, 6], loss_weight=0.0)
    batch = collate(samples + [filler], 0)
    assert objectives.loss_units(batch, Objective(kind="sft")) == 2
    assert objectives.loss_units(batch, Objective(kind="sft", length_normalization="token_mean")) == 5
    # the filler adds nothing to the loss either, whatever its tokens
    model = Bigram()
    with_filler, _ = objectives.compute_loss(model, batch, Objective(kind="sft"))
    without, _ = objectives.compute_loss(model, collate(samples, 0), Objective(kind="sft"))
    assert float(with_filler.detach()) == pytest.approx(float(without.detach()), abs=1e-6)


def test_ppo_targets_with_gamma_and_lambda_one_are_reward_to_go_minus_value():
    samples = [Sample(prompt_ids=[1, 2], response_ids=[3, 4, 5], reward=1.0), Sample(prompt_ids=[1], response_ids=[3, 4], reward=-1.0)]
    batch = collate(samples, 0)
    values = torch.tensor([[9.0, 0.5, 0.25, 0.125], [0.5, -0.5, 9.0, 9.0]])  # 9: outside the responses
    targets = objectives.ppo_targets(batch, values, Objective(kind="ppo", gamma=1.0, lam=1.0))
    assert targets["advantages"].tolist() == [[0.0, 0.5, 0.75, 0.875], [-1.5, -0.5, 0.0, 0.0]]
    assert targets["returns"].tolist() == [[0.0, 1.0, 1.0, 1.0], [-1.0, -1.0, 0.0, 0.0]]
    assert outcome_token_rewards(torch.tensor([2.0, 3.0]), torch.tensor([[1, 1, 0], [0, 0, 0]])).tolist() == [[0, 2, 0], [0, 0, 0]]


@pytest.mark.parametrize("kwargs,message", [
    ({"kind": "dpo", "beta": 0.0}, "objective.beta must be > 0, got 0.0"),
    ({"kind": "dpo", "label_smoothing": 0.5}, r"objective.label_smoothing must be in \[0, 0.5\)"),
    ({"kind": "ppo", "value_clip": -1.0}, "objective.value_clip must be > 0 or None"),
    ({"kind": "ppo", "vf_coef": -0.1}, "objective.vf_coef must be >= 0"),
    ({"kind": "ppo", "lam": 1.5}, r"objective.gamma and objective.lam must be in \[0, 1\]"),
    ({"kind": "ppo", "is_cap": 2.0}, "is_cap applies to policy_gradient"),
    ({"kind": "reward_model"}, "objective.kind must be one of"),
    ({"kind": "sft", "length_normalization": "sum"}, "length_normalization must be mean, constant or token_mean"),
])
def test_objective_rejects_bad_keys_in_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        Objective(**kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs,message", [
    ({"head": "value"}, "learner.head must be one of"),
    ({"head": "classifier", "num_labels": 1}, "learner.num_labels must be >= 2"),
    ({"critic_path": "/x"}, "critic_path applies to head=lm\\+value only"),
])
def test_learner_config_rejects_bad_heads(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LearnerConfig(model_path="/m", **kwargs).validate()


def test_each_objective_names_its_head():
    assert [Objective(kind=k).head for k in ("sft", "policy_gradient", "dpo", "ppo", "prm")] == ["lm", "lm", "lm", "lm+value", "classifier"]
    assert Objective(kind="ppo").needs_old_logprobs


def test_classifier_head_exports_a_directory_transformers_loads_with_the_same_logits(tmp_path):
    from transformers import AutoModelForTokenClassification

    from cdra.models import heads
    from cdra.models.tiny import build_tiny_model

    path = str(build_tiny_model())
    model = heads.load_model(path, "classifier", num_labels=4, seed=3)
    again = heads.load_model(path, "classifier", num_labels=4, seed=3)
    assert torch.equal(model.score.weight, again.score.weight)  # the new head comes from the seed alone
    heads.save_model(model, tmp_path / "prm")
    loaded = AutoModelForTokenClassification.from_pretrained(tmp_path / "prm").eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits, atol=1e-6)
    assert loaded.config.num_labels == 4 and loaded.config.classifier_dropout == 0.0
