import pytest
import torch

from cdra.algos import sft_microbatch_train_step, tokenize_prompt_and_output


class CharTokenizer:
    """a -> 1, b -> 2, ...; pad 0; BOS 30 is added only when special tokens are asked for."""

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


def test_tokenize_prompt_and_output_hand_values():
    # "ab"+"cd" -> [1, 2, 3, 4]; "c"+"ef" -> [3, 5, 6] padded to [3, 5, 6, 0]
    out = tokenize_prompt_and_output(["ab", "c"], ["cd", "ef"], CharTokenizer())
    assert torch.equal(out["input_ids"], torch.tensor([[1, 2, 3], [3, 5, 6]]))
    assert torch.equal(out["labels"], torch.tensor([[2, 3, 4], [5, 6, 0]]))
    # output-token flags of the full rows: [0,0,1,1] and [0,1,1,0]; shifted by one for labels
    assert torch.equal(out["response_mask"], torch.tensor([[False, True, True], [True, True, False]]))
    assert out["input_ids"].dtype == torch.long and out["labels"].dtype == torch.long


def test_tokenize_uses_pad_token_and_no_special_tokens():
    tok = CharTokenizer()
    tok.pad_token_id = 9
    out = tokenize_prompt_and_output(["a"], ["b"], tok)  # full [1, 2]; no BOS 30 anywhere
    assert torch.equal(out["input_ids"], torch.tensor([[1]]))
    assert torch.equal(out["labels"], torch.tensor([[2]]))
    out = tokenize_prompt_and_output(["a", "abc"], ["b", "d"], tok)  # row 0 padded with 9
    assert torch.equal(out["labels"][0], torch.tensor([2, 9, 9]))
    assert not out["response_mask"][0, 1:].any()
    assert 30 not in out["input_ids"]


def test_tokenize_length_mismatch_raises():
    with pytest.raises(ValueError):
        tokenize_prompt_and_output(["a"], ["b", "c"], CharTokenizer())


def test_sft_microbatch_train_step_hand_values():
    log_probs = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]], requires_grad=True)
    mask = torch.tensor([[0, 1, 1], [1, 0, 0]])
    # per-example masked sums: -5, -4; / 2 -> -2.5, -2; mean -2.25; negate 2.25; / gas 2 -> 1.125
    loss, meta = sft_microbatch_train_step(log_probs, mask, gradient_accumulation_steps=2, normalize_constant=2.0)
    assert loss.item() == pytest.approx(1.125)
    assert meta["unscaled_loss"].item() == pytest.approx(2.25)
    assert meta["num_response_tokens"].item() == 3
    # d loss / d logp = -1 / (batch 2 * constant 2 * gas 2) = -0.125 on response tokens only
    expected = torch.tensor([[0.0, -0.125, -0.125], [-0.125, 0.0, 0.0]])
    torch.testing.assert_close(log_probs.grad, expected)


def test_sft_step_padding_and_empty_rows():
    base = torch.tensor([[-1.0, -2.0, 7.0], [9.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    losses = []
    for pad_value in (7.0, -1e6):
        lp = base.clone()
        lp[0, 2] = pad_value
        lp.requires_grad_(True)
        loss, _ = sft_microbatch_train_step(lp, mask, gradient_accumulation_steps=1)
        losses.append(loss.item())
        assert torch.isfinite(lp.grad).all()
    # (-(-3) + 0) / 2 = 1.5, independent of the padded value
    assert losses == [pytest.approx(1.5), pytest.approx(1.5)]
