"""Deterministic tiny Qwen2 models built on the spot, saved as ordinary HF model directories.

Used by the tests and by every job's embedded default: nothing is downloaded. A directory is
keyed by a hash of its config, so repeated calls (and parallel test workers) reuse one build.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from cdra.models.tokenizer import build_byte_tokenizer


@dataclass(frozen=True)
class TinyModelConfig:
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2  # head_dim = hidden / heads must be 64: vLLM's CPU attention rejects 16
    num_kv_heads: int = 2
    intermediate_size: int = 512
    max_positions: int = 1024
    vocab_size: int = 320  # 260 byte/special tokens, rounded up to a multiple of 64
    seed: int = 0

    def validate(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError("tiny model: hidden_size must be divisible by num_heads")
        if self.hidden_size // self.num_heads not in (64, 128):
            raise ValueError("tiny model: head_dim (hidden_size/num_heads) must be 64 or 128 for vLLM")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("tiny model: num_heads must be a multiple of num_kv_heads")

    def digest(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def cache_root() -> Path:
    """Where built models live: $CDRA_CACHE, else ~/.cache/cdra."""
    return Path(os.environ.get("CDRA_CACHE", Path.home() / ".cache" / "cdra"))


def build_tiny_model(config: TinyModelConfig = TinyModelConfig(), root: Path | None = None) -> Path:
    """Build (or reuse) the tiny model directory for `config` and return its path."""
    config.validate()
    target = (root or cache_root() / "models") / f"tiny-qwen2-{config.digest()}"
    if (target / "config.json").exists():
        return target
    tokenizer = build_byte_tokenizer()
    hf_config = Qwen2Config(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        max_position_embeddings=config.max_positions,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(config.seed)
    model = Qwen2ForCausalLM(hf_config)
    save_atomically(model, tokenizer, target)
    return target


def save_atomically(model, tokenizer, target: Path) -> None:
    """Write model + tokenizer to a temp dir and rename, so readers never see half a model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished the same build first
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
