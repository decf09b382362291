import pickle

import pytest

from cdra.algos.experience import Sample
from cdra.runtime.replay import ReplayBuffer, ReplayStore, load_export


def make(prompt_id: str = "p", group_id: int = 0, version: int = 0, reward: float = 0.0, **kw) -> Sample:
    return Sample(prompt_ids=[1, 2], response_ids=[3, 4, 5], prompt_id=prompt_id, group_id=group_id, policy_version=version, reward=reward, **kw)


def group(prompt_id: str, group_id: int, size: int, version: int = 0) -> list[Sample]:
    return [make(prompt_id, group_id, version, reward=float(i)) for i in range(size)]


def keys(samples: list[Sample]) -> list[tuple[str, float]]:
    return [(s.prompt_id, s.reward) for s in samples]


# ---- construction and input checks ---------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "offpolicy"}, "mode"),
        ({"mode": "off_policy", "max_staleness": -1}, "max_staleness"),
        ({"mode": "on_policy", "max_staleness": 2}, "only applies"),
        ({"capacity": 0}, "capacity"),
        ({"capacity": 1.5}, "capacity"),
    ],
)
def test_bad_constructor_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReplayBuffer(**kwargs)


def test_bad_inputs_leave_buffer_unchanged():
    buf = ReplayBuffer()
    with pytest.raises(ValueError, match="item 1"):
        buf.add([make(), "not a sample"])
    with pytest.raises(ValueError, match="rollout_logprobs"):
        buf.add([make(rollout_logprobs=[0.0])])  # 1 logprob for 3 response tokens
    assert buf.size() == 0 and buf.stats()["added"] == 0
    with pytest.raises(ValueError, match="n must be"):
        buf.take(0, current_version=0)
    buf.add([make(version=4)])
    with pytest.raises(ValueError, match="newer than current_version=3"):
        buf.take(None, current_version=3)


# ---- serving -------------------------------------------------------------------------------
def test_on_policy_take_returns_in_order_and_clears():
    buf = ReplayBuffer()
    assert buf.add(group("a", 0, 2) + group("b", 1, 2)) == 4
    out = buf.take(None, current_version=0)
    assert keys(out) == [("a", 0.0), ("a", 1.0), ("b", 0.0), ("b", 1.0)]
    assert buf.size() == 0 and buf.take(None, current_version=0) == []
    stats = buf.stats()
    assert (stats["added"], stats["served"], stats["size"]) == (4.0, 4.0, 0.0)


def test_off_policy_drops_stale_samples_and_counts_them():
    buf = ReplayBuffer(mode="off_policy", max_staleness=1)
    buf.add([make("v0", 0, version=0), make("v1", 1, version=1), make("v2", 2, version=2)])
    out = buf.take(None, current_version=3)  # staleness 3, 2, 1 -> only version 2 survives
    assert [s.prompt_id for s in out] == ["v2"]
    stats = buf.stats()
    assert stats["evicted_stale"] == 2.0 and stats["served"] == 1.0 and stats["size"] == 0.0
    assert stats["staleness_mean"] == 1.0 and stats["staleness_max"] == 1.0


def test_off_policy_keeps_fresh_samples_queued_beyond_n():
    buf = ReplayBuffer(mode="off_policy", max_staleness=2)
    buf.add([make("old", 0, version=1), make("mid", 1, version=2), make("new", 2, version=3)])
    assert [s.prompt_id for s in buf.take(2, current_version=3)] == ["old", "mid"]
    assert buf.stats()["staleness_mean"] == 1.5 and buf.stats()["staleness_max"] == 2.0
    assert [s.prompt_id for s in buf.take(1, current_version=5)] == ["new"]  # staleness 2 == bound: kept
    assert buf.stats()["evicted_stale"] == 0.0


def test_stale_member_drops_its_whole_group():
    buf = ReplayBuffer(mode="off_policy", max_staleness=0)
    buf.add([make("g", 0, version=1), make("g", 0, version=2), make("h", 1, version=2)])
    assert [s.prompt_id for s in buf.take(None, current_version=2)] == ["h"]
    assert buf.stats()["evicted_stale"] == 2.0


def test_groups_are_never_split():
    buf = ReplayBuffer()
    # interleaved arrival: groups are served whole, in order of first arrival
    a, b, c = group("a", 0, 3), group("b", 0, 2), group("c", 0, 2)
    buf.add([a[0], b[0], a[1], b[1], a[2]] + c)
    first = buf.take(4, current_version=0)
    assert keys(first) == keys(a)  # a (3) fits, a + b (5) would overshoot 4
    assert keys(buf.take(4, current_version=0)) == keys(b) + keys(c)
    # same prompt, different group id are different groups; a group bigger than n comes whole
    buf.add(group("p", 0, 3) + group("p", 1, 1))
    assert [(s.group_id, s.reward) for s in buf.take(2, current_version=0)] == [(0, 0.0), (0, 1.0), (0, 2.0)]
    assert buf.size() == 1


def test_capacity_evicts_oldest_whole_groups():
    buf = ReplayBuffer(capacity=5)
    buf.add(group("a", 0, 2) + group("b", 0, 2))
    assert buf.add(group("c", 0, 2)) == 4  # 6 > 5: group a (2) goes, not one sample of it
    assert buf.stats()["evicted_capacity"] == 2.0
    assert [s.prompt_id for s in buf.take(None, current_version=0)] == ["b", "b", "c", "c"]
    with pytest.raises(ValueError, match="more than capacity=5"):
        buf.add(group("d", 0, 6))


def test_clear_keeps_counters_and_history():
    buf = ReplayBuffer(keep_history=True)
    buf.add(group("a", 0, 3))
    buf.clear()
    assert buf.size() == 0 and buf.stats()["added"] == 3.0 and buf.stats()["history_size"] == 3.0


# ---- export --------------------------------------------------------------------------------
def rich_samples() -> list[Sample]:
    return [
        Sample(
            prompt_ids=[7, 8, 9],
            response_ids=[10, 11],
            rollout_logprobs=[-0.5, -1.25],
            reward=1.0,
            token_rewards=[0.0, 1.0],
            advantage=0.75,
            prompt_id="q1",
            group_id=3,
            policy_version=2,
            scorer_version=5,
            metadata={"prompt_text": "1+1?", "response_text": "2", "ground_truth": "2", "steps": [[0, 1]]},
        ),
        Sample(prompt_ids=[1], response_ids=[2], reward=-1.0, advantage=None, prompt_id="q2", group_id=4, policy_version=3, metadata={"ground_truth": 7}),
    ]


def test_export_history_round_trip(tmp_path):
    buf = ReplayBuffer(keep_history=True)
    samples = rich_samples()
    buf.add(samples)
    buf.take(None, current_version=3)
    path = buf.export(str(tmp_path / "out" / "history.parquet"))  # parent dir created
    assert load_export(path) == samples  # history holds what was already served
    ds = buf.to_dataset("history")
    assert ds["prompt_text"] == ["1+1?", None]
    assert ds["ground_truth"] == ["2", None]  # non-string ground truth stays in metadata_json only
    assert ds["metadata_json"][1] == '{"ground_truth": 7}'


def test_export_queued_and_empty(tmp_path):
    buf = ReplayBuffer()
    assert load_export(buf.export(str(tmp_path / "empty.parquet"), what="queued")) == []
    buf.add(group("a", 0, 2))
    assert "prompt_text" not in buf.to_dataset("queued").column_names
    assert load_export(buf.export(str(tmp_path / "q.parquet"), what="queued")) == group("a", 0, 2)
    with pytest.raises(ValueError, match="keep_history=True"):
        buf.export(str(tmp_path / "h.parquet"))
    with pytest.raises(ValueError, match="what must be"):
        buf.to_dataset("all")


def test_export_rejects_unserializable_metadata(tmp_path):
    buf = ReplayBuffer()
    buf.add([make("bad", metadata={"obj": object()})])
    with pytest.raises(ValueError, match="'bad'.*JSON"):
        buf.export(str(tmp_path / "x.parquet"), what="queued")


def test_history_is_bounded_by_capacity():
    buf = ReplayBuffer(capacity=3, keep_history=True)
    for i in range(5):
        buf.add([make(f"s{i}")])
        buf.take(None, current_version=0)
    assert [s.prompt_id for s in load_history(buf)] == ["s2", "s3", "s4"]
    assert buf.stats()["history_size"] == 3.0


def load_history(buf: ReplayBuffer) -> list[Sample]:
    return [Sample(**d) for d in buf.state_dict()["history"]]


# ---- checkpoint ----------------------------------------------------------------------------
def test_state_dict_round_trip_resumes_exactly():
    buf = ReplayBuffer(mode="off_policy", max_staleness=1, capacity=10, keep_history=True)
    buf.add(group("a", 0, 2, version=0) + [make("b", 1, version=1)])
    buf.take(2, current_version=1)
    buf.add([make("b", 1, version=1), make("c", 2, version=2)])  # joins the queued group b
    state = pickle.loads(pickle.dumps(buf.state_dict()))

    resumed = ReplayBuffer(mode="off_policy", max_staleness=1, capacity=10, keep_history=True)
    resumed.load_state_dict(state)
    assert resumed.stats() == buf.stats()
    assert load_history(resumed) == load_history(buf)
    assert resumed.take(1, current_version=2) == buf.take(1, current_version=2)  # whole group b (2 samples)
    assert resumed.size() == buf.size() == 1

    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(mode="off_policy", max_staleness=1, capacity=11, keep_history=True).load_state_dict(state)


# ---- Ray actor -----------------------------------------------------------------------------
@pytest.mark.integration
def test_replay_store_actor_preserves_provenance(ray_local):
    import ray

    store = ReplayStore.remote(mode="off_policy", max_staleness=1, keep_history=True)
    samples = rich_samples()
    assert ray.get(store.add.remote(samples)) == 2
    out = ray.get(store.take.remote(None, 3))
    assert out == samples
    assert (out[0].scorer_version, out[0].advantage, out[0].metadata["steps"]) == (5, 0.75, [[0, 1]])
    stats = ray.get(store.stats.remote())
    assert (stats["served"], stats["size"], stats["staleness_max"]) == (2.0, 0.0, 1.0)
    assert ray.get(store.to_dataset.remote("history")).num_rows == 2
