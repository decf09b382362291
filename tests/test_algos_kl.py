import math

import pytest
import torch

from cdra.algos import kl_estimate, kl_penalized_rewards

LOGP = torch.tensor([0.0, -1.0])
REF = torch.tensor([-1.0, 0.0])


def test_kl_estimators_hand_values():
    # log ratio = logp - ref = [1, -1]
    torch.testing.assert_close(kl_estimate(LOGP, REF, "k1"), torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(kl_estimate(LOGP, REF, "k2"), torch.tensor([0.5, 0.5]))
    # k3: x = ref - logp = [-1, 1]; e^-1 + 1 - 1 = 0.367879; e^1 - 1 - 1 = 0.718282
    torch.testing.assert_close(kl_estimate(LOGP, REF, "k3"), torch.tensor([math.exp(-1), math.e - 2]))
    with pytest.raises(ValueError):
        kl_estimate(LOGP, REF, "k4")


def test_k3_nonnegative_and_finite_under_extreme_ratios():
    torch.manual_seed(0)
    logp, ref = torch.randn(100) * 5, torch.randn(100) * 5
    assert (kl_estimate(logp, ref, "k3") >= 0).all()
    extreme = kl_estimate(torch.tensor([0.0, -1000.0]), torch.tensor([-1000.0, 0.0]), "k3")
    assert torch.isfinite(extreme).all()
    # clamped at |log ratio| = 20: exp(20) - 20 - 1 for the second entry
    assert extreme[1].item() == pytest.approx(math.exp(20) - 21, rel=1e-5)
    assert torch.equal(kl_estimate(logp, logp, "k3"), torch.zeros(100))


def test_kl_estimate_gradient():
    logp = torch.tensor([0.0, -1.0], requires_grad=True)
    kl_estimate(logp, REF, "k3").sum().backward()
    # d/dlogp [exp(ref - logp) + logp - ref - 1] = 1 - exp(ref - logp)
    torch.testing.assert_close(logp.grad, torch.tensor([1 - math.exp(-1), 1 - math.e]))


def test_kl_penalized_rewards():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    logp = torch.tensor([[0.0, -1.0, -0.5]], requires_grad=True)
    ref = torch.tensor([[-1.0, 0.0, -1.0]])
    mask = torch.tensor([[1, 1, 0]])
    # k1 = [1, -1, 0.5]; r - 0.1 * k1 = [-0.1, 0.1, 0.95]; masked -> last 0
    out = kl_penalized_rewards(rewards, logp, ref, mask, beta=0.1)
    torch.testing.assert_close(out, torch.tensor([[-0.1, 0.1, 0.0]]))
    assert not out.requires_grad
    out_k2 = kl_penalized_rewards(rewards, logp, ref, torch.ones(1, 3), beta=1.0, kind="k2")
    torch.testing.assert_close(out_k2, torch.tensor([[-0.5, -0.5, 0.875]]))
