"""ReplayStore: experience held with provenance, served on-policy or off-policy.

`ReplayBuffer` holds all the logic and is a plain class (unit-testable without Ray);
`ReplayStore` is the same class as a Ray actor. The queue is kept per group, keyed by
(group_id, prompt_id) in order of first arrival, because group-normalized advantages are only
valid over a whole group: takes, staleness drops and capacity evictions all act on whole groups.
Callers should add a group's samples before taking it; members that arrive after their group
was taken form a new group entry.

Exports are parquet with one row per sample and every `Sample` field; metadata travels as a JSON
string (`metadata_json`), and the common text fields are copied into their own columns for
readers that want prompt/response pairs (DPO pairs, expert-iteration SFT data).
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import asdict, fields
from typing import Any, Literal

import datasets
import pyarrow.parquet as pq
import ray

from cdra.algos.experience import Sample

Mode = Literal["on_policy", "off_policy"]
Source = Literal["queued", "history"]
GroupKey = tuple[int, str]

_MODES = ("on_policy", "off_policy")
_SOURCES = ("queued", "history")
_TEXT_FIELDS = ("prompt_text", "response_text", "ground_truth")
_STATE_FORMAT = 1
_COUNTERS = ("added", "served", "evicted_stale", "evicted_capacity")

# Explicit schema so empty exports and all-None optional columns still round-trip.
_FLOATS = datasets.Sequence(datasets.Value("float64"))
_FEATURES = {
    "prompt_ids": datasets.Sequence(datasets.Value("int64")),
    "response_ids": datasets.Sequence(datasets.Value("int64")),
    "rollout_logprobs": _FLOATS,
    "ref_logprobs": _FLOATS,
    "reward": datasets.Value("float64"),
    "token_rewards": _FLOATS,
    "advantage": datasets.Value("float64"),
    "token_advantages": _FLOATS,
    "loss_weight": datasets.Value("float64"),
    "token_weights": _FLOATS,
    "rejected_ids": datasets.Sequence(datasets.Value("int64")),
    "rejected_ref_logprobs": _FLOATS,
    "token_labels": datasets.Sequence(datasets.Value("int64")),
    "prompt_id": datasets.Value("string"),
    "group_id": datasets.Value("int64"),
    "policy_version": datasets.Value("int64"),
    "scorer_version": datasets.Value("int64"),
    "metadata_json": datasets.Value("string"),
}
_SAMPLE_FIELDS = tuple(f.name for f in fields(Sample))


def group_key(sample: Sample) -> GroupKey:
    return (sample.group_id, sample.prompt_id)


class ReplayBuffer:
    """Experience queue with provenance; see the module docstring for the group rule."""

    def __init__(
        self,
        mode: Mode = "on_policy",
        max_staleness: int = 0,
        capacity: int = 100_000,
        keep_history: bool = False,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"ReplayBuffer: mode must be one of {_MODES}, got {mode!r}")
        if not _is_int(max_staleness) or max_staleness < 0:
            raise ValueError(f"ReplayBuffer: max_staleness must be an int >= 0, got {max_staleness!r}")
        if mode == "on_policy" and max_staleness != 0:
            raise ValueError(f"ReplayBuffer: max_staleness={max_staleness} only applies to mode='off_policy'")
        if not _is_int(capacity) or capacity < 1:
            raise ValueError(f"ReplayBuffer: capacity must be an int >= 1, got {capacity!r}")
        if not isinstance(keep_history, bool):
            raise ValueError(f"ReplayBuffer: keep_history must be a bool, got {keep_history!r}")
        self.mode: Mode = mode
        self.max_staleness = max_staleness
        self.capacity = capacity
        self.keep_history = keep_history
        self._groups: OrderedDict[GroupKey, list[Sample]] = OrderedDict()
        self._size = 0
        self._history: deque[Sample] = deque(maxlen=capacity)
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._staleness = (0.0, 0.0)  # mean, max of the last take

    # ---- queue -------------------------------------------------------------------------
    def add(self, samples: list[Sample]) -> int:
        """Queue samples (validated first, all or nothing); returns the queue size after."""
        _check_samples(samples)
        incoming: dict[GroupKey, int] = {}
        for s in samples:
            incoming[group_key(s)] = incoming.get(group_key(s), 0) + 1
        for key, count in incoming.items():
            total = count + len(self._groups.get(key, ()))
            if total > self.capacity:
                raise ValueError(f"ReplayBuffer.add: group {key} would hold {total} samples, more than capacity={self.capacity}")
        for s in samples:
            self._groups.setdefault(group_key(s), []).append(s)
        self._size += len(samples)
        self._counters["added"] += len(samples)
        if self.keep_history:
            self._history.extend(samples)
        self._evict_for_capacity()
        return self._size

    def take(self, n: int | None, current_version: int) -> list[Sample]:
        """Remove and return up to `n` samples (all when None), oldest whole groups first.

        Off-policy, groups with any sample staler than `max_staleness` are dropped first. A
        first group larger than `n` is still returned whole; otherwise taking stops at the
        first group that would overshoot `n`, so order stays FIFO.
        """
        if n is not None and (not _is_int(n) or n < 1):
            raise ValueError(f"ReplayBuffer.take: n must be None or an int >= 1, got {n!r}")
        if not _is_int(current_version) or current_version < 0:
            raise ValueError(f"ReplayBuffer.take: current_version must be an int >= 0, got {current_version!r}")
        self._check_not_from_future(current_version)
        if self.mode == "off_policy":
            self._drop_stale(current_version)
        out: list[Sample] = []
        while self._groups:
            key, group = next(iter(self._groups.items()))
            if n is not None and out and len(out) + len(group) > n:
                break
            del self._groups[key]
            out.extend(group)
        self._size -= len(out)
        self._counters["served"] += len(out)
        self._staleness = _staleness_summary(out, current_version)
        return out

    def size(self) -> int:
        return self._size

    def stats(self) -> dict[str, float]:
        out = {k: float(v) for k, v in self._counters.items()}
        out["size"] = float(self._size)
        out["history_size"] = float(len(self._history))
        out["staleness_mean"], out["staleness_max"] = self._staleness
        return out

    def clear(self) -> None:
        """Drop the queue (not the history or the counters)."""
        self._groups.clear()
        self._size = 0

    def _evict_for_capacity(self) -> None:
        while self._size > self.capacity:
            _, group = self._groups.popitem(last=False)
            self._size -= len(group)
            self._counters["evicted_capacity"] += len(group)

    def _drop_stale(self, current_version: int) -> None:
        stale = [
            key
            for key, group in self._groups.items()
            if any(current_version - s.policy_version > self.max_staleness for s in group)
        ]
        for key in stale:
            group = self._groups.pop(key)
            self._size -= len(group)
            self._counters["evicted_stale"] += len(group)

    def _check_not_from_future(self, current_version: int) -> None:
        newest = max((s.policy_version for g in self._groups.values() for s in g), default=current_version)
        if newest > current_version:
            raise ValueError(
                f"ReplayBuffer.take: queued sample has policy_version={newest}, newer than current_version={current_version}"
            )

    # ---- export ------------------------------------------------------------------------
    def to_dataset(self, what: Source = "history") -> datasets.Dataset:
        """One row per sample, with every Sample field (metadata as `metadata_json`)."""
        return samples_to_dataset(self._source(what))

    def export(self, path: str, what: Source = "history") -> str:
        """Write `to_dataset(what)` as parquet to `path`; returns the path."""
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        self.to_dataset(what).to_parquet(path)
        return path

    def _source(self, what: Source) -> list[Sample]:
        if what not in _SOURCES:
            raise ValueError(f"ReplayBuffer: what must be one of {_SOURCES}, got {what!r}")
        if what == "history":
            if not self.keep_history:
                raise ValueError("ReplayBuffer: history is not kept; construct with keep_history=True or use what='queued'")
            return list(self._history)
        return self._queued()

    def _queued(self) -> list[Sample]:
        return [s for group in self._groups.values() for s in group]

    # ---- checkpoint --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain picklable data: config, counters, queued samples and history (as dicts)."""
        return {
            "format": _STATE_FORMAT,
            "config": self._config(),
            "counters": dict(self._counters),
            "staleness": list(self._staleness),
            "queued": [asdict(s) for s in self._queued()],
            "history": [asdict(s) for s in self._history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()`; the buffer must have been built with the same config."""
        if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
            raise ValueError(f"ReplayBuffer.load_state_dict: expected a state dict with format={_STATE_FORMAT}")
        if state["config"] != self._config():
            raise ValueError(f"ReplayBuffer.load_state_dict: state was saved with {state['config']}, this buffer has {self._config()}")
        queued = [Sample(**d) for d in state["queued"]]
        history = [Sample(**d) for d in state["history"]]
        self._groups = OrderedDict()
        for s in queued:
            self._groups.setdefault(group_key(s), []).append(s)
        self._size = len(queued)
        self._history = deque(history, maxlen=self.capacity)
        self._counters = {k: int(state["counters"][k]) for k in _COUNTERS}
        mean, worst = state["staleness"]
        self._staleness = (float(mean), float(worst))

    def _config(self) -> dict[str, Any]:
        return {"mode": self.mode, "max_staleness": self.max_staleness, "capacity": self.capacity, "keep_history": self.keep_history}


# num_cpus=0: the store only holds data, so it must never take a CPU slot from engines or learners.
ReplayStore = ray.remote(num_cpus=0)(ReplayBuffer)


def samples_to_dataset(samples: Iterable[Sample]) -> datasets.Dataset:
    rows = [_sample_row(s) for s in samples]
    texts = [name for name in _TEXT_FIELDS if any(name in r for r in rows)]
    features = dict(_FEATURES)
    for name in texts:
        features[name] = datasets.Value("string")
    # Column-wise so that an empty export still has the schema and absent text fields are None.
    columns = {name: [row.get(name) for row in rows] for name in features}
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def load_export(path: str) -> list[Sample]:
    """Read a parquet file written by `ReplayBuffer.export` back into Samples."""
    if not os.path.isfile(path):
        raise ValueError(f"load_export: no such file {path!r}")
    rows = pq.read_table(path).to_pylist()
    missing = [name for name in _FEATURES if rows and name not in rows[0]]
    if missing:
        raise ValueError(f"load_export: {path!r} lacks columns {missing}; was it written by ReplayBuffer.export?")
    return [_row_sample(r) for r in rows]


def _sample_row(s: Sample) -> dict[str, Any]:
    row = {name: getattr(s, name) for name in _SAMPLE_FIELDS if name != "metadata"}
    try:
        row["metadata_json"] = json.dumps(s.metadata, sort_keys=True)
    except TypeError as e:
        raise ValueError(f"export: metadata of sample {s.prompt_id!r} (group {s.group_id}) is not JSON-serializable: {e}") from e
    for name in _TEXT_FIELDS:
        if isinstance(s.metadata.get(name), str):
            row[name] = s.metadata[name]
    return row


def _row_sample(row: dict[str, Any]) -> Sample:
    values = {name: row[name] for name in _SAMPLE_FIELDS if name != "metadata"}
    return Sample(**values, metadata=json.loads(row["metadata_json"]))


def _check_samples(samples: list[Sample]) -> None:
    if not isinstance(samples, list):
        raise ValueError(f"ReplayBuffer.add: expected a list of Sample, got {type(samples).__name__}")
    for i, s in enumerate(samples):
        if not isinstance(s, Sample):
            raise ValueError(f"ReplayBuffer.add: item {i} is a {type(s).__name__}, not a Sample")
        s.validate()


def _staleness_summary(samples: list[Sample], current_version: int) -> tuple[float, float]:
    if not samples:
        return (0.0, 0.0)
    ages = [current_version - s.policy_version for s in samples]
    return (sum(ages) / len(ages), float(max(ages)))


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
