import math

import pytest
import torch

from cdra.algos import masked_mean, masked_normalize, masked_sum, masked_whiten

T = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
M = torch.tensor([[1, 1, 0], [0, 0, 0]])


def test_masked_mean_all_and_per_row():
    # selected entries: 1, 2 -> mean 1.5
    assert masked_mean(T, M).item() == pytest.approx(1.5)
    # row 0: (1+2)/2 = 1.5; row 1 has no masked entry -> 0, not NaN
    torch.testing.assert_close(masked_mean(T, M, dim=-1), torch.tensor([1.5, 0.0]))
    # columns: col0 -> 1, col1 -> 2, col2 empty -> 0
    torch.testing.assert_close(masked_mean(T, M, dim=0), torch.tensor([1.0, 2.0, 0.0]))


def test_masked_mean_empty_mask_is_zero_with_zero_grad():
    x = T.clone().requires_grad_(True)
    out = masked_mean(x, torch.zeros_like(M))
    assert out.item() == 0.0
    out.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_masked_mean_bool_and_float_masks_agree():
    assert masked_mean(T, M.bool()).item() == masked_mean(T, M.float()).item()


def test_padding_never_contributes():
    poisoned = T.clone()
    poisoned[M == 0] = float("nan")
    poisoned[1, 0] = float("inf")
    assert masked_mean(poisoned, M).item() == pytest.approx(1.5)
    torch.testing.assert_close(masked_mean(poisoned, M, dim=-1), torch.tensor([1.5, 0.0]))
    torch.testing.assert_close(masked_normalize(poisoned, M, 2.0, dim=-1), torch.tensor([1.5, 0.0]))
    assert torch.isfinite(masked_whiten(poisoned, M)).all()


def test_masked_normalize_and_sum():
    # masked sum = 3; / 2 = 1.5
    assert masked_normalize(T, M, 2.0).item() == pytest.approx(1.5)
    torch.testing.assert_close(masked_normalize(T, M, 4.0, dim=-1), torch.tensor([0.75, 0.0]))
    torch.testing.assert_close(masked_sum(T, torch.ones_like(M), dim=-1), torch.tensor([6.0, 15.0]))


def test_masked_whiten_hand_values():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # mean 2, population var (1 + 0 + 1)/3 = 2/3 -> +-1/sqrt(2/3) = +-1.22474; padding -> 0
    s = 1 / math.sqrt(2 / 3)
    torch.testing.assert_close(masked_whiten(values, mask), torch.tensor([[-s, 0.0, s, 0.0]]))
    # unbiased var = 2/2 = 1 -> -1, 0, 1
    torch.testing.assert_close(masked_whiten(values, mask, unbiased=True), torch.tensor([[-1.0, 0.0, 1.0, 0.0]]))
    # only rescale: (v - 2) * s + 2
    torch.testing.assert_close(
        masked_whiten(values, mask, shift_mean=False), torch.tensor([[2 - s, 2.0, 2 + s, 0.0]])
    )


def test_masked_whiten_all_equal_and_empty_are_zero():
    values = torch.full((2, 3), 0.7)
    out = masked_whiten(values, torch.ones(2, 3))
    assert torch.equal(out, torch.zeros(2, 3))
    out = masked_whiten(values, torch.zeros(2, 3))
    assert torch.equal(out, torch.zeros(2, 3))


def test_masked_whiten_is_batch_wide():
    values = torch.randn(4, 5)
    mask = torch.rand(4, 5) > 0.3
    out = masked_whiten(values, mask)
    sel = out[mask]
    assert sel.mean().abs().item() < 1e-5
    assert sel.pow(2).mean().item() == pytest.approx(1.0, abs=1e-4)
