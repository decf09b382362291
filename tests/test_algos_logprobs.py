import math

import pytest
import torch

from cdra.algos import compute_entropy, get_response_log_probs, log_probs_from_logits


@pytest.fixture(scope="module")
def tiny_model():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    return transformers.Qwen2ForCausalLM(cfg).eval()


def test_entropy_hand_values():
    # uniform over 4 -> log 4; p = (0.25, 0.75) -> -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.562335
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [math.log(0.25), math.log(0.75), -math.inf, -math.inf]])
    expected = torch.tensor([math.log(4.0), 0.5623351446])
    torch.testing.assert_close(compute_entropy(logits), expected)


def test_entropy_stable_and_matches_categorical():
    logits = torch.randn(3, 5, 11) * 50  # large logits: naive exp would overflow
    ours = compute_entropy(logits)
    ref = torch.distributions.Categorical(logits=logits).entropy()
    assert ours.shape == (3, 5)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(compute_entropy(logits, chunk_size=2), ours)
    # a one-hot distribution has entropy 0, not NaN
    assert compute_entropy(torch.tensor([0.0, -math.inf, -math.inf])).item() == 0.0


def test_log_probs_from_logits_hand_and_reference():
    # uniform logits -> log(1/4) for any label
    assert log_probs_from_logits(torch.zeros(1, 1, 4), torch.tensor([[2]])).item() == pytest.approx(-math.log(4))
    logits = torch.randn(2, 7, 13)
    labels = torch.randint(0, 13, (2, 7))
    ref = torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(log_probs_from_logits(logits, labels), ref)
    torch.testing.assert_close(log_probs_from_logits(logits, labels, chunk_size=3), ref)
    bf16 = log_probs_from_logits(logits.bfloat16(), labels)
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, ref, atol=0.1, rtol=0.05)


def test_log_probs_ignore_index_gives_zero():
    logits = torch.randn(1, 3, 5)
    labels = torch.tensor([[1, -100, 4]])
    out = log_probs_from_logits(logits, labels)
    assert out[0, 1].item() == 0.0
    assert out[0, 0].item() == pytest.approx(torch.log_softmax(logits[0, 0], -1)[1].item(), abs=1e-6)


def test_log_probs_gradient_matches_log_softmax():
    logits = torch.randn(2, 3, 6, requires_grad=True)
    labels = torch.randint(0, 6, (2, 3))
    log_probs_from_logits(logits, labels, chunk_size=2).sum().backward()
    ours = logits.grad.clone()
    logits.grad = None
    torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).sum().backward()
    torch.testing.assert_close(ours, logits.grad)


def test_get_response_log_probs_matches_manual(tiny_model):
    torch.manual_seed(1)
    input_ids = torch.randint(0, 32, (2, 6))
    labels = torch.randint(0, 32, (2, 6))
    out = get_response_log_probs(tiny_model, input_ids, labels, return_token_entropy=True)
    logits = tiny_model(input_ids).logits
    logp = torch.log_softmax(logits, -1)
    manual = logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    manual_entropy = -(logp.exp() * logp).sum(-1)
    assert out["log_probs"].shape == (2, 6)
    torch.testing.assert_close(out["log_probs"], manual, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["token_entropy"], manual_entropy, atol=1e-5, rtol=1e-5)
    assert "token_entropy" not in get_response_log_probs(tiny_model, input_ids, labels)


def test_get_response_log_probs_attention_mask_and_grad(tiny_model):
    input_ids = torch.tensor([[3, 4, 5, 0]])
    labels = torch.tensor([[4, 5, 6, 0]])
    attn = torch.tensor([[1, 1, 1, 0]])
    with_mask = get_response_log_probs(tiny_model, input_ids, labels, attention_mask=attn)["log_probs"]
    without = get_response_log_probs(tiny_model, input_ids, labels)["log_probs"]
    # causal model + right padding: real positions are unaffected by the mask
    torch.testing.assert_close(with_mask[:, :3], without[:, :3], atol=1e-5, rtol=1e-5)
    tiny_model.zero_grad()
    without[:, :3].sum().backward()
    assert tiny_model.model.embed_tokens.weight.grad is not None
    tiny_model.zero_grad()
