"""Tiny model factory and byte tokenizer: deterministic, cached, loadable by transformers and vLLM."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cdra.data.synthetic import format_r1_solution, make_problems
from cdra.models.tiny import TinyModelConfig, build_tiny_model
from cdra.models.tokenizer import build_byte_tokenizer


def test_tokenizer_round_trips_task_text_and_has_specials():
    tok = build_byte_tokenizer()
    problem = make_problems(1, seed=3)[0]
    text = problem.question + format_r1_solution(problem) + " ünïcode ✓"
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(ids) == text
    assert ids[:5] == list(problem.question.encode()[:5])  # one token per byte
    assert tok.eos_token_id == 256 and tok.pad_token_id == 257
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_tiny_model_is_deterministic_and_cached(tmp_path):
    a = build_tiny_model(TinyModelConfig(seed=5), root=tmp_path)
    mtime = (a / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_model(TinyModelConfig(seed=5), root=tmp_path) == a
    assert (a / "model.safetensors").stat().st_mtime_ns == mtime  # cache hit, not rebuilt
    b = build_tiny_model(TinyModelConfig(seed=6), root=tmp_path)
    assert a != b
    wa = AutoModelForCausalLM.from_pretrained(a).model.embed_tokens.weight
    wb = AutoModelForCausalLM.from_pretrained(b).model.embed_tokens.weight
    assert not torch.equal(wa, wb)
    assert AutoTokenizer.from_pretrained(a).decode([72, 105]) == "Hi"


def test_bad_tiny_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="head_dim"):
        build_tiny_model(TinyModelConfig(hidden_size=64, num_heads=4), root=tmp_path)


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_vllm_greedy_matches_transformers(tmp_path):
    path = build_tiny_model(TinyModelConfig(seed=1), root=tmp_path)
    prompt = list(b"Start with 3. Add 4.")
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    expected = hf.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False)[0, len(prompt):].tolist()
    # vLLM in its own process, as a user script would run it
    script = textwrap.dedent(f"""
        import json, os
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"
        from vllm import LLM, SamplingParams
        if __name__ == "__main__":
            llm = LLM(model={str(path)!r}, dtype="float32", max_model_len=256, enforce_eager=True)
            out = llm.generate([{{"prompt_token_ids": {prompt}}}], SamplingParams(temperature=0, max_tokens=24, ignore_eos=True))
            print("RESULT" + json.dumps(list(out[0].outputs[0].token_ids)))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=500)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
    assert lines, proc.stderr[-3000:]
    assert json.loads(lines[-1][6:]) == expected
