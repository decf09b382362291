import math

import pytest
import torch

from cdra.algos import (
    compute_group_normalized_rewards,
    compute_grpo_clip_loss,
    compute_naive_policy_gradient_loss,
    compute_policy_gradient_loss,
    compute_token_clip_loss,
    group_normalize,
    grpo_microbatch_train_step,
)

# ---------------------------------------------------------------- group normalization


def test_group_normalize_hand_values():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    # group 1: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.577350; A = +-0.5 / (0.577350 + 1e-6)
    a = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    out = group_normalize(rewards, group_size=4, eps=1e-6, normalize_by_std=True)
    # group 2 is all equal: 0 / (0 + eps) = 0, no NaN
    torch.testing.assert_close(out, torch.tensor([a, -a, -a, a, 0.0, 0.0, 0.0, 0.0]))
    out = group_normalize(rewards, group_size=4, eps=1e-6, normalize_by_std=False)
    torch.testing.assert_close(out, torch.tensor([0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0]))


def test_group_normalize_group_size_one_and_bad_sizes():
    out = group_normalize(torch.tensor([1.0, 0.0, 3.0]), group_size=1, eps=1e-6, normalize_by_std=True)
    assert torch.equal(out, torch.zeros(3))
    with pytest.raises(ValueError):
        group_normalize(torch.ones(5), group_size=2, eps=1e-6, normalize_by_std=True)


def _reward_fn(response, ground_truth):
    fmt = 1.0 if response.startswith("<") else 0.0
    ans = 1.0 if fmt and response.strip("<>") == ground_truth else 0.0
    return {"format_reward": fmt, "answer_reward": ans, "reward": ans}


def test_compute_group_normalized_rewards():
    responses = ["<4>", "<5>", "4", "<4>", "x", "y"]
    gts = ["4", "4", "4", "4", "7", "7"]
    adv, raw, meta = compute_group_normalized_rewards(
        _reward_fn, responses, gts, group_size=2, advantage_eps=1e-6, normalize_by_std=False
    )
    # rewards 1,0 | 0,1 | 0,0 -> centered +-0.5, 0
    torch.testing.assert_close(raw, torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(adv, torch.tensor([0.5, -0.5, -0.5, 0.5, 0.0, 0.0]))
    assert meta["mean_reward"] == pytest.approx(1 / 3)
    assert meta["std_reward"] == pytest.approx(raw.std().item())
    assert meta["max_reward"] == 1.0 and meta["min_reward"] == 0.0
    assert meta["mean_format_reward"] == pytest.approx(0.5)  # "<4>", "<5>", "<4>"
    assert meta["mean_answer_reward"] == pytest.approx(1 / 3)
    assert all(isinstance(v, float) for v in meta.values())

    adv_std, _, _ = compute_group_normalized_rewards(
        _reward_fn, responses, gts, group_size=2, advantage_eps=1e-6, normalize_by_std=True
    )
    # std of (1, 0) unbiased = sqrt(0.5) = 0.707107; 0.5 / 0.707107 = 0.707106
    a = 0.5 / (math.sqrt(0.5) + 1e-6)
    torch.testing.assert_close(adv_std, torch.tensor([a, -a, -a, a, 0.0, 0.0]))

    with pytest.raises(ValueError):
        compute_group_normalized_rewards(_reward_fn, responses, gts[:-1], 2, 1e-6, True)


# ---------------------------------------------------------------- per-token losses

LP = torch.tensor([[-1.0, -2.0], [-3.0, -4.0]])


def test_naive_policy_gradient_loss():
    # -A * logp: row 0 A=2 -> 2, 4; row 1 A=-1 -> -3, -4
    expected = torch.tensor([[2.0, 4.0], [-3.0, -4.0]])
    torch.testing.assert_close(compute_naive_policy_gradient_loss(torch.tensor([[2.0], [-1.0]]), LP), expected)
    # a (batch,) tensor broadcasts per row, not per column
    torch.testing.assert_close(compute_naive_policy_gradient_loss(torch.tensor([2.0, -1.0]), LP), expected)


def _clip_example():
    ratios = torch.tensor([[1.5, 1.0, 0.5], [1.5, 1.0, 0.5]])
    logp = ratios.log().requires_grad_(True)
    old = torch.zeros(2, 3)
    adv = torch.tensor([[1.0], [-1.0]])
    return adv, logp, old


def test_grpo_clip_loss_hand_values_and_clip_fraction():
    adv, logp, old = _clip_example()
    loss, meta = compute_grpo_clip_loss(adv, logp, old, cliprange=0.2)
    # A=+1: rho 1.5 -> min(1.5, 1.2) = 1.2 (clipped); 1.0 -> 1; 0.5 -> min(0.5, 0.8) = 0.5
    # A=-1: rho 1.5 -> min(-1.5, -1.2) = -1.5; 1.0 -> -1; 0.5 -> min(-0.5, -0.8) = -0.8 (clipped)
    torch.testing.assert_close(loss, torch.tensor([[-1.2, -1.0, -0.5], [1.5, 1.0, 0.8]]))
    clipped = torch.tensor([[True, False, False], [False, False, True]])
    assert torch.equal(meta["clipped"], clipped)
    assert meta["clip_fraction"].mean().item() == pytest.approx(2 / 6)
    torch.testing.assert_close(meta["ratio"], torch.tensor([[1.5, 1.0, 0.5], [1.5, 1.0, 0.5]]))
    # clipped tokens get no gradient; the others get -A * rho
    loss.sum().backward()
    expected_grad = torch.tensor([[0.0, -1.0, -0.5], [1.5, 1.0, 0.0]])
    torch.testing.assert_close(logp.grad, expected_grad)


def test_grpo_clip_on_policy_equals_reinforce():
    logp = torch.randn(3, 4)
    adv = torch.randn(3, 1)
    loss, meta = compute_grpo_clip_loss(adv, logp, logp.clone(), cliprange=0.2)
    torch.testing.assert_close(loss, -adv.expand(3, 4))  # rho = 1 -> loss = -A
    assert not meta["clipped"].any()


def test_token_clip_loss_dense_and_dual_clip():
    adv = torch.tensor([[-1.0, -1.0, 1.0, 2.0]])
    ratios = torch.tensor([[5.0, 2.0, 5.0, 0.9]])
    logp, old = ratios.log(), torch.zeros(1, 4)
    loss, meta = compute_token_clip_loss(adv, logp, old, cliprange=0.2)
    # A=-1 rho 5 -> 5; A=-1 rho 2 -> 2; A=1 rho 5 -> -1.2 (clipped); A=2 rho 0.9 -> -1.8
    torch.testing.assert_close(loss, torch.tensor([[5.0, 2.0, -1.2, -1.8]]))
    assert torch.equal(meta["clipped"], torch.tensor([[False, False, True, False]]))
    loss_dc, meta_dc = compute_token_clip_loss(adv, logp, old, cliprange=0.2, clip_ratio_c=3.0)
    # dual clip caps the A<0 loss at -A * 3 = 3: 5 -> 3; 2 stays
    torch.testing.assert_close(loss_dc, torch.tensor([[3.0, 2.0, -1.2, -1.8]]))
    assert torch.equal(meta_dc["dual_clipped"], torch.tensor([[True, False, False, False]]))
    with pytest.raises(ValueError):
        compute_token_clip_loss(adv, logp, old, cliprange=0.2, clip_ratio_c=0.5)


def test_compute_policy_gradient_loss_dispatch_and_errors():
    adv = torch.tensor([[2.0], [-1.0]])
    loss, _ = compute_policy_gradient_loss(LP, "no_baseline", raw_rewards=adv)
    torch.testing.assert_close(loss, torch.tensor([[2.0, 4.0], [-3.0, -4.0]]))
    loss, _ = compute_policy_gradient_loss(LP, "reinforce_with_baseline", advantages=adv)
    torch.testing.assert_close(loss, torch.tensor([[2.0, 4.0], [-3.0, -4.0]]))
    loss, meta = compute_policy_gradient_loss(LP, "grpo_clip", advantages=adv, old_log_probs=LP, cliprange=0.2)
    torch.testing.assert_close(loss, torch.tensor([[-2.0, -2.0], [1.0, 1.0]]))
    assert "clip_fraction" in meta

    with pytest.raises(ValueError, match="raw_rewards"):
        compute_policy_gradient_loss(LP, "no_baseline", advantages=adv)
    with pytest.raises(ValueError, match="advantages"):
        compute_policy_gradient_loss(LP, "reinforce_with_baseline", raw_rewards=adv)
    with pytest.raises(ValueError, match="old_log_probs"):
        compute_policy_gradient_loss(LP, "grpo_clip", advantages=adv, cliprange=0.2)
    with pytest.raises(ValueError, match="cliprange"):
        compute_policy_gradient_loss(LP, "grpo_clip", advantages=adv, old_log_probs=LP)
    with pytest.raises(ValueError, match="loss_type"):
        compute_policy_gradient_loss(LP, "ppo", advantages=adv)


# ---------------------------------------------------------------- microbatch step

ADV = torch.tensor([[2.0], [-1.0]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])


def _lp():
    return torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]], requires_grad=True)


def test_grpo_microbatch_mean_hand_values_and_grad_scaling():
    lp = _lp()
    loss, meta = grpo_microbatch_train_step(
        lp, MASK, gradient_accumulation_steps=4, loss_type="reinforce_with_baseline", advantages=ADV
    )
    # per-token -A*logp: [[2, 4, 6], [-4, -5, -6]]; row means over response: 3, -4
    # batch mean -0.5; / 4 -> -0.125
    assert loss.item() == pytest.approx(-0.125)
    assert meta["unscaled_loss"].item() == pytest.approx(-0.5)
    # grad = -A / (n_row * batch 2 * gas 4): row 0 -> -2/16 = -0.125 (x2); row 1 -> 1/8 = 0.125
    expected = torch.tensor([[-0.125, -0.125, 0.0], [0.125, 0.0, 0.0]])
    torch.testing.assert_close(lp.grad, expected)

    lp1 = _lp()
    loss1, _ = grpo_microbatch_train_step(
        lp1, MASK, gradient_accumulation_steps=1, loss_type="reinforce_with_baseline", advantages=ADV
    )
    assert loss1.item() == pytest.approx(4 * loss.item())
    torch.testing.assert_close(lp1.grad, 4 * lp.grad)


def test_grpo_microbatch_constant_and_token_mean():
    loss, _ = grpo_microbatch_train_step(
        _lp(), MASK, 4, "reinforce_with_baseline", advantages=ADV,
        length_normalization="constant", normalize_constant=3.0,
    )
    # row sums 6, -4 -> / 3 -> 2, -4/3; mean 1/3; / 4 -> 1/12
    assert loss.item() == pytest.approx(1 / 12)
    loss, _ = grpo_microbatch_train_step(
        _lp(), MASK, 4, "reinforce_with_baseline", advantages=ADV, length_normalization="token_mean"
    )
    # (2 + 4 - 4) / 3 tokens = 2/3; / 4 -> 1/6
    assert loss.item() == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="normalize_constant"):
        grpo_microbatch_train_step(
            _lp(), MASK, 1, "reinforce_with_baseline", advantages=ADV, length_normalization="constant"
        )


def test_grpo_microbatch_no_baseline_uses_raw_rewards():
    lp = _lp()
    loss, _ = grpo_microbatch_train_step(lp, MASK, 1, "no_baseline", raw_rewards=torch.tensor([[1.0], [0.0]]))
    # -r*logp: row 0 (1 + 2)/2 = 1.5; row 1: 0 -> mean 0.75
    assert loss.item() == pytest.approx(0.75)
    assert lp.grad is not None


def test_grpo_microbatch_padding_and_empty_response():
    losses = []
    for pad in (-3.0, 1e6):
        lp = torch.tensor([[-1.0, -2.0, pad], [-4.0, pad, pad]], requires_grad=True)
        loss, _ = grpo_microbatch_train_step(lp, MASK, 1, "reinforce_with_baseline", advantages=ADV)
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1])

    lp = _lp()
    empty = torch.tensor([[1, 1, 0], [0, 0, 0]])
    loss, _ = grpo_microbatch_train_step(lp, empty, 1, "reinforce_with_baseline", advantages=ADV)
    # row 0 mean 3, empty row contributes 0 -> 1.5
    assert loss.item() == pytest.approx(1.5)
    assert torch.isfinite(lp.grad).all()
    assert torch.equal(lp.grad[1], torch.zeros(3))


def test_grpo_microbatch_clip_fraction_over_response_tokens():
    adv, logp, old = _clip_example()
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # hides the clipped token of row 1
    loss, meta = grpo_microbatch_train_step(
        logp, mask, 2, "grpo_clip", advantages=adv, old_log_probs=old, cliprange=0.2
    )
    # 1 clipped of 5 response tokens
    assert meta["clip_fraction"].item() == pytest.approx(1 / 5)
    # row means: (-1.2 - 1 - 0.5)/3 = -0.9, (1.5 + 1)/2 = 1.25 -> mean 0.175; / 2 -> 0.0875
    assert loss.item() == pytest.approx(0.0875)
    assert logp.grad is not None and logp.grad[0, 0].item() == 0.0
