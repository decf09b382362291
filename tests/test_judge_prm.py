"""The discriminative PRM actor: a (K+1)-class token-classification model read at step-end
tokens; its step scores equal a transformers forward pass, and failures score 0, counted."""

from __future__ import annotations

import pytest
import torch

from cdra.models.tiny import TinyModelConfig, build_tiny_model
from cdra.runtime.scorer import ScoreItem

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NUM_LABELS = 4  # K = 3 completions per prefix: values 0..3


@pytest.fixture(scope="module")
def prm_path(tmp_path_factory) -> str:
    """A random-init Qwen2 token classifier on the tiny model's config, its head scaled so the
    class probabilities differ from position to position."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForTokenClassification

    base = build_tiny_model(TinyModelConfig(seed=0))
    config = Qwen2Config.from_pretrained(base)
    config.num_labels = NUM_LABELS
    torch.manual_seed(0)
    model = Qwen2ForTokenClassification(config)
    torch.nn.init.normal_(model.score.weight, std=0.1)
    target = tmp_path_factory.mktemp("prm")
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(base).save_pretrained(target)
    return str(target)


def _items(tok) -> list[ScoreItem]:
    answers = [" Step 1: 2+3=5\nStep 2: 5+4=9\nThe answer is 9.", " Step 1: 7-2=4\nStep 2: 4+1=5\nThe answer is 5.",
               " The answer is 3.", " Step 1: 1+1=2\nStep 2: 2+2=4\nStep 3: 4+4=8"]
    items = []
    for q, a in zip(["Start with 2. Add 3. Add 4.", "Start with 7. Subtract 2. Add 1.", "Start with 3.", "Start with 1."], answers):
        prompt_ids = tok(f"Q: {q}\nA:", add_special_tokens=False).input_ids
        items.append(ScoreItem(a, "", prompt=q, prompt_ids=prompt_ids, response_ids=tok(a, add_special_tokens=False).input_ids + [tok.eos_token_id]))
    return items


def test_prm_step_scores_equal_a_transformers_forward_pass(ray_local, prm_path):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from cdra.rewards.judging import steps_splitter
    from cdra.runtime.prm_actor import PRMPool

    tok = AutoTokenizer.from_pretrained(prm_path)
    items = _items(tok)
    pool = PRMPool(prm_path, tok, steps_splitter(), combine=min)
    try:
        assert pool.num_labels == NUM_LABELS
        results = pool.score(items)
        hf = AutoModelForTokenClassification.from_pretrained(prm_path, dtype=torch.float32).eval()
        for item, r in zip(items, results):
            # byte tokenizer: token t of the response is its character t, so a step ends at its last character
            step_ends = [len(item.prompt_ids) + e - 1 for _, e in steps_splitter()(item.response)]
            assert [len(item.prompt_ids) + e - 1 for _, e in r.step_spans] == step_ends
            with torch.no_grad():
                probs = torch.softmax(hf(torch.tensor([item.prompt_ids + item.response_ids])).logits[0].double(), -1)
            expected = probs[step_ends, 2:].sum(-1).tolist()
            assert r.step_scores == pytest.approx(expected, abs=1e-4)
            assert r.score == pytest.approx(min(expected), abs=1e-4) and r.error is None
        scores = [s for r in results for s in r.step_scores]
        assert len(scores) == 2 + 2 + 1 + 3 and max(scores) - min(scores) > 0.05

        pool.time_limit_s = 1e-3  # no forward pass answers that fast: scored 0, counted, actor restarted
        late = pool.score(items[:1])
        assert late[0].score == 0.0 and late[0].step_scores == [0.0, 0.0] and late[0].error.startswith("timeout")
        assert pool.stats()["prm/timeouts"] == 1.0
    finally:
        pool.close()


def test_a_raising_prm_scores_zero_and_is_counted(ray_local, prm_path):
    from transformers import AutoTokenizer

    from cdra.rewards.judging import steps_splitter
    from cdra.runtime.prm_actor import PRMPool

    def raising(logits: torch.Tensor) -> torch.Tensor:  # local: pickled by value into the actor
        raise RuntimeError("reduction bug")

    tok = AutoTokenizer.from_pretrained(prm_path)
    pool = PRMPool(prm_path, tok, steps_splitter(), reduction=raising)
    try:
        results = pool.score(_items(tok))
        assert [r.score for r in results] == [0.0] * 4 and all("RuntimeError" in r.error for r in results)
        assert pool.stats() == {"prm/calls": 1.0, "prm/errors": 1.0, "prm/timeouts": 0.0}
    finally:
        pool.close()
