import json
import logging
import struct
from pathlib import Path

import pytest

from cdra.runtime.tracking import RAY_GAUGES, Tracker, format_value, read_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _isolate_wandb(tmp_path, monkeypatch):
    # wandb writes settings and caches under $HOME unless told otherwise.
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / var.lower()))
    monkeypatch.delenv("WANDB_MODE", raising=False)


def make_tracker(path: Path, **kwargs) -> Tracker:
    return Tracker(path, run_name="test-run", config={"lr": 1e-3}, use_wandb=False, **kwargs)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])  # IHDR width, height


def test_jsonl_exact_content(tmp_path):
    out = tmp_path / "run"
    tracker = make_tracker(out)
    assert out.is_dir()
    tracker.log(0, {"loss": 0.5, "reward/mean": 0.25})
    tracker.log(1, {"loss": 0.125, "n": 3})
    assert (out / "metrics.jsonl").read_text() == (
        '{"step": 0, "loss": 0.5, "reward/mean": 0.25}\n'
        '{"step": 1, "loss": 0.125, "n": 3}\n'
    )


def test_fresh_run_starts_a_new_file(tmp_path):
    make_tracker(tmp_path).log(0, {"loss": 1.0})
    tracker = make_tracker(tmp_path)
    tracker.log(0, {"loss": 2.0})
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 0, "loss": 2.0}\n'


def test_resume_truncates_and_equals_uninterrupted_run(tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    uninterrupted = make_tracker(full)
    for step in range(5):
        uninterrupted.log(step, {"loss": 1.0 / (step + 1)})

    crashed = make_tracker(resumed)
    for step in range(4):
        crashed.log(step, {"loss": 1.0 / (step + 1)})
    with (resumed / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "lo')  # a write cut short by the crash
    # The last checkpoint was step 1: rows 2 and 3 are redone after resuming.
    tracker = make_tracker(resumed, resume_step=1)
    assert [row["step"] for row in read_metrics(resumed / "metrics.jsonl")] == [0, 1]
    for step in range(2, 5):
        tracker.log(step, {"loss": 1.0 / (step + 1)})
    assert (resumed / "metrics.jsonl").read_text() == (full / "metrics.jsonl").read_text()


def test_resume_without_existing_file(tmp_path):
    tracker = make_tracker(tmp_path, resume_step=3)
    tracker.log(4, {"loss": 1.0})
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 4, "loss": 1.0}]


def test_nonfinite_written_as_null_and_warned_once(tmp_path, caplog):
    tracker = make_tracker(tmp_path)
    with caplog.at_level(logging.WARNING, logger="cdra.runtime.tracking"):
        tracker.log(0, {"loss": float("nan"), "kl": float("inf"), "ok": 1.5})
        tracker.log(1, {"loss": float("nan"), "kl": float("-inf")})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert lines == ['{"step": 0, "loss": null, "kl": null, "ok": 1.5}', '{"step": 1, "loss": null, "kl": null}']
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2
    assert any("'loss'" in m for m in warned) and any("'kl'" in m for m in warned)


@pytest.mark.parametrize(
    "step, metrics, match",
    [
        (0, {"loss": "high"}, "metric 'loss' must be a number"),
        (0, {"loss": None}, "metric 'loss' must be a number"),
        (0, {"step": 1}, "'step' is not allowed"),
        (-1, {"loss": 1.0}, "non-negative int"),
        (1.5, {"loss": 1.0}, "non-negative int"),
    ],
)
def test_log_rejects_bad_input(tmp_path, step, metrics, match):
    tracker = make_tracker(tmp_path)
    with pytest.raises(ValueError, match=match):
        tracker.log(step, metrics)
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_constructor_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="wandb_mode"):
        make_tracker(tmp_path, wandb_mode="cloud")
    with pytest.raises(ValueError, match="resume_step"):
        make_tracker(tmp_path, resume_step=-2)


def test_summary_line_exact(tmp_path):
    tracker = make_tracker(tmp_path)
    metrics = {"reward/mean": 0.412, "loss": 0.0123, "eval/acc": 0.5, "lr": 1e-06, "rollout/tokens": 2048}
    assert tracker.summary_line(3, metrics) == (
        "step 3 | eval/acc 0.5 | loss 1.23e-02 | lr 1.00e-06 | reward/mean 0.412 | rollout/tokens 2048"
    )


def test_summary_line_keeps_preferred_keys_when_too_many(tmp_path):
    tracker = make_tracker(tmp_path)
    metrics = {f"misc/k{i:02d}": 1.0 for i in range(12)}
    metrics.update({"reward/mean": 0.5, "loss": 2.0, "eval/acc": 0.25})
    parts = tracker.summary_line(7, metrics).split(" | ")
    assert parts[0] == "step 7"
    keys = [p.split(" ")[0] for p in parts[1:]]
    # 3 preferred keys + the first 7 of the rest by name, shown sorted.
    assert keys == ["eval/acc", "loss"] + [f"misc/k{i:02d}" for i in range(7)] + ["reward/mean"]


@pytest.mark.parametrize(
    "value, text",
    [(0, "0"), (0.0, "0"), (12.3456, "12.35"), (-0.25, "-0.25"), (12345.0, "1.23e+04"), (float("nan"), "nan"), (True, "1")],
)
def test_format_value(value, text):
    assert format_value(value) == text


def test_plot_writes_png_and_skips_missing_keys(tmp_path):
    tracker = make_tracker(tmp_path)
    for step in range(4):
        tracker.log(step, {"reward/mean": 0.1 * step, "loss": 1.0 - 0.2 * step})
    default = tracker.plot(["reward/mean", "not/logged"])
    assert default == tmp_path / "reward_curve.png"
    one_panel = png_size(default)
    two_panels = png_size(tracker.plot(["reward/mean", "loss"], tmp_path / "plots" / "both.png"))
    # One panel per present key: the missing key adds no panel, so the figure is half as tall.
    assert one_panel[0] == two_panels[0]
    assert two_panels[1] == 2 * one_panel[1]
    with pytest.raises(ValueError, match="at least one"):
        tracker.plot([])


@pytest.mark.timeout(120)
def test_wandb_offline_creates_run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    tracker = Tracker(tmp_path, run_name="wb", config={"lr": 1e-3}, use_wandb=True, wandb_mode="online")
    assert tracker.wandb_run is not None  # WANDB_MODE=offline overrode "online": no network needed
    run_id = (tmp_path / "wandb_run_id.txt").read_text().strip()
    tracker.log(0, {"loss": 1.0, "bad": float("nan")})
    tracker.close()
    assert tracker.wandb_run is None
    runs = list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1
    # A resumed tracker reuses the run id so wandb appends to the same run.
    resumed = Tracker(tmp_path, run_name="wb", config={}, use_wandb=True, resume_step=0)
    assert resumed.wandb_run.id == run_id
    resumed.close()


def test_wandb_init_failure_does_not_crash(tmp_path, monkeypatch, caplog):
    import wandb

    def broken_init(**kwargs):
        raise RuntimeError("no wandb today")

    monkeypatch.setattr(wandb, "init", broken_init)
    with caplog.at_level(logging.WARNING, logger="cdra.runtime.tracking"):
        tracker = Tracker(tmp_path, run_name="wb", config={}, use_wandb=True)
    assert tracker.wandb_run is None
    assert "no wandb today" in caplog.text
    tracker.log(0, {"loss": 1.0})
    tracker.close()
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 0, "loss": 1.0}]


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_ray_gauges_created_and_set(tmp_path, no_ray):
    ray = pytest.importorskip("ray")
    assert make_tracker(tmp_path).gauges == {}  # no Ray, no gauges
    ray.init(address="local", num_cpus=1, include_dashboard=False)
    try:
        tracker = make_tracker(tmp_path)
        assert set(tracker.gauges) == set(RAY_GAUGES)
        assert {g.info["name"] for g in tracker.gauges.values()} == set(RAY_GAUGES.values())
        tracker.log(2, {"reward/mean": 0.5, "async/staleness": 1, "sync/seconds": float("nan"), "other": 3.0})
    finally:
        ray.shutdown()
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["reward/mean"] == 0.5
