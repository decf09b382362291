import math

import pytest
import torch
import torch.nn.functional as F

from cdra.algos import compute_per_instance_dpo_loss, dpo_loss


class CharTokenizer:
    """a -> 1, b -> 2, ...; EOS 31; BOS 30 only when special tokens are asked for."""

    pad_token_id = 0
    eos_token_id = 31
    bos_token_id = 30

    def encode(self, text, add_special_tokens=True):
        ids = [ord(c) - ord("a") + 1 for c in text]
        return ([self.bos_token_id] if add_special_tokens else []) + ids

    def __call__(self, texts, add_special_tokens=True):
        if isinstance(texts, str):
            return {"input_ids": self.encode(texts, add_special_tokens)}
        return {"input_ids": [self.encode(t, add_special_tokens) for t in texts]}


def _tiny_lm(seed):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    cfg = transformers.Qwen2Config(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    return transformers.Qwen2ForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def models():
    return _tiny_lm(0), _tiny_lm(1)


def test_dpo_loss_equal_logps_is_log2():
    x = torch.tensor([-3.0, -7.0])
    loss, meta = dpo_loss(x, x - 1, x, x - 1, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2))
    assert meta["margin"].item() == 0.0 and meta["accuracy"].item() == 0.0


def test_dpo_loss_hand_values():
    # r_c = 0.5 * (-1 + 1.5) = 0.25; r_r = 0.5 * (-2 + 1.5) = -0.25; margin 0.5
    # loss = -log sigmoid(0.5) = log(1 + e^-0.5) = 0.474077
    pc = torch.tensor([-1.0], requires_grad=True)
    loss, meta = dpo_loss(pc, torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5]), beta=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.5)))
    assert meta["accuracy"].item() == 1.0
    assert meta["margin"].item() == pytest.approx(0.5)
    torch.testing.assert_close(meta["chosen_rewards"], torch.tensor([0.25]))
    torch.testing.assert_close(meta["rejected_rewards"], torch.tensor([-0.25]))
    loss.backward()
    # d/dpc = -beta * sigmoid(-margin) = -0.5 * 0.377541
    assert pc.grad.item() == pytest.approx(-0.5 / (1 + math.exp(0.5)))


def test_dpo_loss_batch_accuracy():
    pc = torch.tensor([0.0, 0.0])
    pr = torch.tensor([-1.0, 1.0])
    zeros = torch.zeros(2)
    _, meta = dpo_loss(pc, pr, zeros, zeros, beta=1.0)
    assert meta["accuracy"].item() == 0.5
    assert meta["margin"].item() == pytest.approx(0.0)


def _manual_response_logp(model, prompt_ids, response_ids):
    ids = torch.tensor([prompt_ids + response_ids])
    logp = torch.log_softmax(model(ids).logits[0, :-1], -1)
    token_logp = logp.gather(-1, ids[0, 1:].unsqueeze(-1)).squeeze(-1)
    return token_logp[len(prompt_ids) - 1 :].sum()  # only labels that are response tokens


def test_compute_per_instance_dpo_loss_matches_manual(models):
    lm, ref = models
    tok = CharTokenizer()
    prompt, chosen, rejected = "abc", "de", "fgh"
    beta = 0.5
    loss = compute_per_instance_dpo_loss(lm, ref, tok, beta, prompt, chosen, rejected)

    # prompt [1,2,3]; chosen [4,5] + EOS 31; rejected [6,7,8] + EOS 31; no BOS
    p, c, r = [1, 2, 3], [4, 5, 31], [6, 7, 8, 31]
    with torch.no_grad():
        margin = (_manual_response_logp(lm, p, c) - _manual_response_logp(ref, p, c)) - (
            _manual_response_logp(lm, p, r) - _manual_response_logp(ref, p, r)
        )
        expected = -F.logsigmoid(beta * margin)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)

    lm.zero_grad()
    ref.zero_grad()
    loss.backward()
    assert lm.model.embed_tokens.weight.grad is not None
    assert ref.model.embed_tokens.weight.grad is None
    lm.zero_grad()


def test_compute_per_instance_dpo_loss_same_model_is_log2(models):
    lm, _ = models
    loss = compute_per_instance_dpo_loss(lm, lm, CharTokenizer(), 0.1, "ab", "c", "dd")
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)


def test_compute_per_instance_dpo_loss_without_eos(models):
    lm, ref = models
    tok = CharTokenizer()
    tok.eos_token_id = None
    loss = compute_per_instance_dpo_loss(lm, ref, tok, 0.5, "ab", "c", "de")
    with torch.no_grad():
        margin = (_manual_response_logp(lm, [1, 2], [3]) - _manual_response_logp(ref, [1, 2], [3])) - (
            _manual_response_logp(lm, [1, 2], [4, 5]) - _manual_response_logp(ref, [1, 2], [4, 5])
        )
    assert loss.item() == pytest.approx(-F.logsigmoid(0.5 * margin).item(), abs=1e-5)
