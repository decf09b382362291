"""ReferenceModel: a frozen HF model serving response log-probs (the KL anchor)."""

from __future__ import annotations

import os

import torch

from cdra.algos.experience import Sample, collate, response_positions
from cdra.runtime.objectives import label_logprobs


class ReferenceModel:
    """Ray actor body. `load` swaps the anchor (e.g. to a Stage I snapshot) without a restart."""

    def __init__(self, model_path: str, pad_id: int, micro_batch_size: int = 16, cpu_threads: int = 1) -> None:
        if not torch.cuda.is_available():
            torch.set_num_threads(cpu_threads)
        self.pad_id = pad_id
        self.micro_batch_size = micro_batch_size
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.load(model_path)

    def load(self, model_path: str) -> str:
        from transformers import AutoModelForCausalLM

        if not os.path.isdir(model_path):
            raise FileNotFoundError(f"reference model path does not exist: {model_path}")
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(self.device).eval()
        self.model_path = model_path
        return model_path

    @torch.no_grad()
    def logprobs(self, samples: list[Sample]) -> list[list[float]]:
        out: list[list[float]] = []
        for start in range(0, len(samples), self.micro_batch_size):
            chunk = samples[start : start + self.micro_batch_size]
            batch = {k: v.to(self.device) for k, v in collate(chunk, self.pad_id).items()}
            lp = label_logprobs(self.model, batch).float().cpu()
            out.extend(lp[i, response_positions(s)].tolist() for i, s in enumerate(chunk))
        return out
