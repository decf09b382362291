"""The rows of a run's `experience.parquet` with the step spans of each response, for tests that
check where a recipe laid its step scores (CDRA, step PPO)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cdra.rewards import StepSpan, split_steps


@dataclass
class JudgedRow:
    row: pd.Series
    meta: dict
    rewards: list[float]  # per response token
    ids: list[int]  # response token ids
    spans: list[StepSpan]  # the steps, in characters = tokens of the byte-level tiny tokenizer


def judged_rows(experience: Path, tokenizer) -> Iterator[JudgedRow]:
    """Each row with its steps as the judge saw them: one judged score per step span."""
    for _, row in pd.read_parquet(experience).iterrows():
        meta = json.loads(row["metadata_json"])
        ids = list(row["response_ids"])
        body = [t for t in ids if t != tokenizer.eos_token_id]
        text = tokenizer.decode(body)
        assert len(text) == len(body)  # the tiny tokenizer is byte-level: token t is character t
        spans = split_steps(text, max_steps=5)
        assert len(spans) == len(meta["step_scores"])
        yield JudgedRow(row, meta, list(row["token_rewards"]), ids, spans)
