import math

import pytest
import torch

from cdra.algos import aggregate_step_scores, clipped_value_loss, prm_step_loss, prm_step_scores


def test_clipped_value_loss_hand_values():
    values = torch.tensor([[1.0, 0.0]], requires_grad=True)
    old = torch.tensor([[0.5, 0.5]])
    returns = torch.tensor([[2.0, 0.0]])
    # pos 0: (1-2)^2 = 1; v_clip = 0.7 -> 1.69; max 1.69. pos 1: 0; v_clip = 0.3 -> 0.09
    loss = clipped_value_loss(values, old, returns, torch.ones(1, 2), clip_range=0.2)
    assert loss.item() == pytest.approx(0.5 * (1.69 + 0.09) / 2)
    loss.backward()
    # both positions take the clipped branch (constant in v): no gradient
    assert torch.equal(values.grad, torch.zeros(1, 2))
    assert clipped_value_loss(values, old, returns, torch.tensor([[1, 0]])).item() == pytest.approx(0.845)
    # unclipped: 0.5 * (1 + 0) / 2
    assert clipped_value_loss(values, old, returns, torch.ones(1, 2), clip_range=None).item() == pytest.approx(0.25)


def test_clipped_value_loss_padding_and_grad():
    values = torch.tensor([[0.6, 123.0]], requires_grad=True)
    old = torch.tensor([[0.5, -7.0]])
    returns = torch.tensor([[1.0, 0.0]])
    mask = torch.tensor([[1, 0]])
    loss = clipped_value_loss(values, old, returns, mask)
    # inside the clip range: 0.5 * (0.6 - 1)^2 = 0.08; grad = v - R = -0.4
    assert loss.item() == pytest.approx(0.08)
    loss.backward()
    torch.testing.assert_close(values.grad, torch.tensor([[-0.4, 0.0]]))
    assert clipped_value_loss(values, old, returns, torch.zeros(1, 2)).item() == 0.0


def test_prm_step_loss_and_scores():
    # uniform logits over K+1 = 4 classes -> cross entropy log 4
    assert prm_step_loss(torch.zeros(2, 4), torch.tensor([0, 3])).item() == pytest.approx(math.log(4))
    logits = torch.tensor([[0.0, 2.0, -1.0, 0.5]], requires_grad=True)
    loss = prm_step_loss(logits, torch.tensor([1]))
    assert loss.item() == pytest.approx(-torch.log_softmax(logits.detach(), -1)[0, 1].item())
    loss.backward()
    assert logits.grad is not None
    # ignore_index rows do not count
    assert prm_step_loss(torch.zeros(2, 4), torch.tensor([0, -100])).item() == pytest.approx(math.log(4))

    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]])
    scores = prm_step_scores(probs.log())
    torch.testing.assert_close(scores, torch.tensor([0.7, 0.2]))  # P(class >= 2)
    torch.testing.assert_close(prm_step_scores(probs.log(), threshold_class=1), torch.tensor([0.9, 0.3]))


def test_aggregate_step_scores():
    s = torch.tensor([0.5, 0.8, 0.9])
    assert aggregate_step_scores(s, "prod").item() == pytest.approx(0.36)
    assert aggregate_step_scores(s, "min").item() == pytest.approx(0.5)
    assert aggregate_step_scores(s, "sum").item() == pytest.approx(2.2)
    assert aggregate_step_scores(s, "last").item() == pytest.approx(0.9)
    with pytest.raises(ValueError):
        aggregate_step_scores(s, "max")


def test_aggregate_step_scores_padded_rows():
    s = torch.tensor([[0.5, 0.8, 0.1], [0.3, 0.2, 0.9], [0.4, 0.4, 0.4]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]])
    torch.testing.assert_close(aggregate_step_scores(s, "prod", mask), torch.tensor([0.4, 0.054, 0.0]))
    torch.testing.assert_close(aggregate_step_scores(s, "min", mask), torch.tensor([0.5, 0.2, 0.0]))
    torch.testing.assert_close(aggregate_step_scores(s, "sum", mask), torch.tensor([1.3, 1.4, 0.0]))
    torch.testing.assert_close(aggregate_step_scores(s, "last", mask), torch.tensor([0.8, 0.9, 0.0]))
