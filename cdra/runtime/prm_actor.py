"""The discriminative judge: a (K+1)-class token-classification PRM served by Ray actors.

The PRM reads the policy's prompt + response tokens (it shares the policy's tokenizer) and is
read at each step's last token; a step's score is a reduction of the K+1 class logits there,
P(class >= 2) by default (ALGORITHMS.md section 5). Step token spans come from the policy's
response ids exactly as for the generative judge (`JudgePool.step_spans`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from cdra.rewards.judging import incremental_offsets, mean_unparsed_zero, token_spans
from cdra.runtime.scorer import ScoreItem, ScoreResult

Reduction = Callable[[torch.Tensor], torch.Tensor]  # step-end logits (num_steps, K+1) -> step scores (num_steps,)


def at_least_class(threshold_class: int = 2) -> Reduction:
    """P(class >= threshold_class), the LPR step score."""
    from cdra.algos.value import prm_step_scores

    return lambda logits: prm_step_scores(logits, threshold_class)


class PRMWorker:
    """Ray actor body: one AutoModelForTokenClassification, batched forward passes."""

    def __init__(self, model_path: str, pad_id: int, reduction: Reduction | None = None, micro_batch_size: int = 16,
                 cpu_threads: int = 1) -> None:
        from transformers import AutoModelForTokenClassification

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cpu":
            torch.set_num_threads(cpu_threads)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.model = AutoModelForTokenClassification.from_pretrained(model_path, dtype=dtype).to(self.device).eval()
        self.pad_id = pad_id
        self.reduction = reduction or at_least_class(2)
        self.micro_batch_size = micro_batch_size

    def ready(self) -> int:
        return self.model.config.num_labels

    @torch.no_grad()
    def score(self, sequences: list[list[int]], positions: list[list[int]]) -> list[list[float]]:
        """Step scores of each sequence at its given token positions (right-padded batches: a
        causal model's logits at a real position do not see the padding after it)."""
        out: list[list[float]] = []
        for start in range(0, len(sequences), self.micro_batch_size):
            seqs, pos = sequences[start : start + self.micro_batch_size], positions[start : start + self.micro_batch_size]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for i, s in enumerate(seqs):
                if any(not 0 <= p < len(s) for p in pos[i]):
                    raise ValueError(f"step position outside sequence {start + i} of {len(s)} tokens: {pos[i]}")
                ids[i, : len(s)] = torch.tensor(s)
                mask[i, : len(s)] = 1
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits.float().cpu()
            for i, p in enumerate(pos):
                out.append(self.reduction(logits[i, p]).tolist() if p else [])
        return out


class PRMPool:
    """Driver-side handle on PRMWorker actors; same `ScoreResult`s as the generative judge.

    A call past `time_limit_s` or on a failed actor scores its items 0 and is counted; an
    overrunning actor is killed and restarted by Ray (up to `max_restarts`).
    """

    def __init__(self, model_path: str, policy_tokenizer: Any, split: Callable[[str], Sequence[tuple[int, int]]],
                 combine: Callable[[list[float]], float] = mean_unparsed_zero, reduction: Reduction | None = None,
                 num_actors: int = 1, time_limit_s: float = 60.0, actor_options: list[dict] | None = None, max_restarts: int = 3) -> None:
        import ray

        if time_limit_s <= 0:
            raise ValueError(f"PRM time_limit_s must be > 0, got {time_limit_s}")
        remote = ray.remote(PRMWorker)
        options = actor_options or [{"num_cpus": 1} for _ in range(num_actors)]
        pad_id = policy_tokenizer.pad_token_id if policy_tokenizer.pad_token_id is not None else 0
        self.actors = [remote.options(max_restarts=max_restarts, **opt).remote(model_path, pad_id, reduction) for opt in options]
        self.num_labels = ray.get([a.ready.remote() for a in self.actors])[0]
        self.tokenizer = policy_tokenizer
        self.split = split
        self.combine = combine
        self.time_limit_s = time_limit_s
        self.version = 0
        self.counts = {"calls": 0, "errors": 0, "timeouts": 0}

    def step_spans(self, item: ScoreItem) -> list[tuple[int, int]]:
        if item.response_ids is None or item.prompt_ids is None:
            raise ValueError("the PRM needs ScoreItem.prompt_ids and response_ids (the policy's tokens)")
        text, offsets = incremental_offsets(item.response_ids, lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True))
        return token_spans(offsets, list(self.split(text)))

    def score(self, items: list[ScoreItem]) -> list[ScoreResult]:
        import ray

        if not items:
            return []
        spans = [self.step_spans(it) for it in items]
        sequences = [list(it.prompt_ids) + list(it.response_ids) for it in items]
        # a step is read at its last token; a step holding no token has no score (counted 0)
        positions = [[len(it.prompt_ids) + e - 1 for s, e in sp if e > s] for it, sp in zip(items, spans)]
        n = len(self.actors)
        chunks = [list(range(len(items)))[k::n] for k in range(n)]
        refs = {self.actors[k].score.remote([sequences[i] for i in c], [positions[i] for i in c]): k for k, c in enumerate(chunks) if c}
        self.counts["calls"] += len(refs)
        done, late = ray.wait(list(refs), num_returns=len(refs), timeout=self.time_limit_s)
        scores: dict[int, list[float]] = {}
        errors: dict[int, str] = {}
        for ref in done:
            chunk = chunks[refs[ref]]
            try:
                scores.update(zip(chunk, ray.get(ref)))
            except Exception as e:  # noqa: BLE001 - a failed PRM call scores its items 0 and is counted
                self.counts["errors"] += 1
                errors.update((i, f"error: PRM raised {type(e).__name__}") for i in chunk)
        for ref in late:
            ray.kill(self.actors[refs[ref]], no_restart=False)
            self.counts["timeouts"] += 1
            errors.update((i, f"timeout: PRM call over {self.time_limit_s:g}s") for i in chunks[refs[ref]])
        results = []
        for i, sp in enumerate(spans):
            if i in errors:
                results.append(ScoreResult(0.0, {"steps": float(len(sp))}, [0.0] * len(sp), sp, errors[i]))
                continue
            got = iter(scores[i])
            step_scores = [next(got) if e > s else 0.0 for s, e in sp]
            results.append(ScoreResult(float(self.combine(step_scores)), {"steps": float(len(sp))}, step_scores, sp))
        return results

    def stats(self) -> dict[str, float]:
        return {f"prm/{k}": float(v) for k, v in self.counts.items()}

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)


@contextmanager
def between_steps_prm(model_path: str, policy_tokenizer: Any, split: Callable[[str], Sequence[tuple[int, int]]],
                      threshold_class: int, time_limit_s: float) -> Iterator[PRMPool]:
    """One PRM actor claiming no CPU, for scoring between learner steps: the run's placement
    group already holds the cluster's CPUs, and nothing else runs while the PRM scores."""
    pool = PRMPool(model_path, policy_tokenizer, split, reduction=at_least_class(threshold_class), time_limit_s=time_limit_s,
                   actor_options=[{"num_cpus": 0}])
    try:
        yield pool
    finally:
        pool.close()
