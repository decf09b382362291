"""The CPU-independent parts of benchmarks/gpu_smoke.py (the run itself needs >= 3 GPUs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_smoke  # noqa: E402


@pytest.mark.parametrize("size,low,high", [("0.5b", 0.45e9, 0.6e9), ("1.5b", 1.2e9, 1.6e9)])
def test_model_sizes_are_what_they_say(size, low, high):
    config = gpu_smoke.model_config(size)
    config.validate()  # head_dim 64 / 128: what vLLM accepts
    assert low <= gpu_smoke.parameter_count(config) <= high


def test_unknown_size_is_named():
    with pytest.raises(ValueError, match="--size must be one of"):
        gpu_smoke.model_config("7b")


def test_learner_ranks_fit_next_to_the_engines():
    assert gpu_smoke.plan_learner_ranks(3) == 1
    assert gpu_smoke.plan_learner_ranks(4) == 2
    assert gpu_smoke.plan_learner_ranks(8) == 2
    with pytest.raises(SystemExit, match="needs at least 3 GPUs .* found 2"):
        gpu_smoke.plan_learner_ranks(2)


def test_greedy_agreement_counts_exact_argmax_and_allows_bf16_ties():
    logits = torch.tensor([[0.0, 5.0, 1.0], [2.0, 2.1, 0.0], [9.0, 0.0, 0.0]])
    assert gpu_smoke.greedy_agreement([1, 0, 0], logits, tolerance=0.25) == (2, True)  # 2.0 vs 2.1: a tie
    assert gpu_smoke.greedy_agreement([1, 1, 2], logits, tolerance=0.25) == (2, False)  # 0.0 vs 9.0: wrong
    with pytest.raises(ValueError, match="2 tokens but logits for 3 positions"):
        gpu_smoke.greedy_agreement([1, 1], logits)


def test_markdown_lines_carry_every_figure():
    figures = dict(date="2026-12-01", gpus="4x NVIDIA H100", vllm="0.32.0", torch="2.13.0", size="0.5b", params=5.2e8,
                   bytes=2 ** 30, engines=2, ranks=2, sync_seconds=[0.5, 0.25, 0.75], sync_median=0.5, engines_equal=3,
                   near_argmax=3, checks=3, exact_tokens=70, total_tokens=72, prompts=64, new_tokens=256,
                   ours_tps=9000.0, raw_tps=10000.0, pool_tps=17000.0)
    text = "\n".join(gpu_smoke.markdown_lines(figures))
    for piece in ("0.52B parameters", "bf16 = 1.00 GiB", "0.50, 0.25, 0.75", "median 0.50 s", "2.00 GiB/s",
                  "engines identical 3/3", "exact argmax 70/72", "RolloutWorker 9000 tok/s", "ratio 0.90", "17000 tok/s"):
        assert piece in text, piece


def test_script_fails_fast_without_a_gpu():
    # the system PATH only: no nvidia-smi on this CPU machine
    result = subprocess.run(["/bin/bash", str(REPO / "benchmarks" / "gpu_smoke.sh")], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin"}, timeout=30)
    assert result.returncode == 2
    assert "gpu_smoke: no NVIDIA GPU here" in result.stderr
