"""Run tracking: metrics JSONL (the record of truth), wandb (offline by default), Ray gauges.

The JSONL file is what resume, plots and tests read; wandb and the Ray dashboard are views of
the same numbers and must never be able to crash a run, so their failures become warnings.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import ray
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
WANDB_ID_FILE = "wandb_run_id.txt"
WANDB_MODES = ("online", "offline", "disabled")
SUMMARY_MAX_KEYS = 10

# Metric key -> Ray gauge name; these are the numbers DESIGN.md asks the dashboard to show.
RAY_GAUGES: dict[str, str] = {
    "rollout/tokens_per_s": "cdra_rollout_tokens_per_s",
    "reward/mean": "cdra_reward_mean",
    "async/staleness": "cdra_staleness",
    "replay/queue_depth": "cdra_queue_depth",
    "sync/seconds": "cdra_sync_seconds",
    "learner/tokens_per_s": "cdra_learner_tokens_per_s",
    "step": "cdra_step",
}


def _check_step(step: Any, where: str) -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ValueError(f"{where}: step must be a non-negative int, got {step!r}")
    return int(step)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real)


def _json_number(value: numbers.Real) -> int | float | None:
    """Plain int/float for JSON; NaN and +-inf become None (JSON has no spelling for them)."""
    if isinstance(value, numbers.Integral):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a metrics JSONL file. A line cut short by a crash is skipped with a warning."""
    rows: list[dict[str, Any]] = []
    path = Path(path)
    if not path.exists():
        return rows
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("%s:%d is not valid JSON (interrupted write?); skipping it", path, lineno)
            continue
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            logger.warning("%s:%d has no integer 'step'; skipping it", path, lineno)
            continue
        rows.append(row)
    return rows


def format_value(value: Any) -> str:
    """Compact number for a log line: ints as-is, 4 significant digits in [0.1, 1e4), else 1.23e-02."""
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if not _is_number(value):
        return str(value)
    value = float(value)
    if value == 0.0:
        return "0"
    if not math.isfinite(value):
        return str(value)
    if 0.1 <= abs(value) < 1e4:
        return f"{value:.4g}"
    return f"{value:.2e}"


def _summary_priority(key: str) -> int:
    """Lower is shown first when there are more keys than fit on one line."""
    if key.startswith("reward/"):
        return 0
    if key == "loss" or key.startswith("loss/") or key.endswith("/loss"):
        return 1
    if key.startswith("eval/"):
        return 2
    return 3


def summary_keys(keys: Iterable[str], max_keys: int = SUMMARY_MAX_KEYS) -> list[str]:
    """The keys a summary line shows: best `max_keys` by priority (then name), listed by name."""
    candidates = sorted((k for k in keys if k != "step"), key=lambda k: (_summary_priority(k), k))
    return sorted(candidates[:max_keys])


class Tracker:
    """Logs one metrics dict per step to JSONL, wandb and Ray gauges.

    A fresh run (resume_step None) starts a new JSONL file; a resumed run keeps the rows with
    step <= resume_step, so after it finishes the file equals the one of an uninterrupted run.
    """

    def __init__(
        self,
        output_dir: str | Path,
        run_name: str,
        config: dict,
        use_wandb: bool = True,
        wandb_mode: str = "offline",
        wandb_project: str = "cdra",
        resume_step: int | None = None,
    ) -> None:
        if not isinstance(config, dict):
            raise ValueError(f"Tracker: config must be a dict, got {type(config).__name__}")
        if not run_name:
            raise ValueError("Tracker: run_name must be a non-empty string")
        if wandb_mode not in WANDB_MODES:
            raise ValueError(f"Tracker: wandb_mode must be one of {WANDB_MODES}, got {wandb_mode!r}")
        if resume_step is not None:
            resume_step = _check_step(resume_step, "Tracker resume_step")

        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.run_name = run_name
        self.metrics_path = self.output_dir / METRICS_FILE
        self._warned_nonfinite: set[str] = set()
        self._prepare_metrics_file(resume_step)

        self.wandb_run: Any = None
        if use_wandb:
            self.wandb_run = self._init_wandb(config, wandb_mode, wandb_project, resume_step is not None)
        self.gauges: dict[str, Any] = self._init_gauges() if ray.is_initialized() else {}

    def _prepare_metrics_file(self, resume_step: int | None) -> None:
        if resume_step is None:
            self.metrics_path.write_text("")
            return
        kept = [row for row in read_metrics(self.metrics_path) if row["step"] <= resume_step]
        tmp = self.metrics_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
        tmp.replace(self.metrics_path)  # atomic: a crash here leaves the old or the new file, never half

    def _wandb_run_id(self, resuming: bool) -> str:
        """Stable across resumes of this output_dir so wandb appends to the same run."""
        id_path = self.output_dir / WANDB_ID_FILE
        if resuming and id_path.exists():
            return id_path.read_text().strip()
        run_id = secrets.token_hex(6)  # wandb ids: lowercase alphanumerics, unique per project
        id_path.write_text(run_id + "\n")
        return run_id

    def _init_wandb(self, config: dict, mode: str, project: str, resuming: bool) -> Any:
        mode = os.environ.get("WANDB_MODE") or mode  # the user's environment wins over the config
        try:
            import wandb

            return wandb.init(
                project=project,
                name=self.run_name,
                id=self._wandb_run_id(resuming),
                config=config,
                dir=str(self.output_dir),
                mode=mode,
                resume="allow",
            )
        except Exception as exc:  # wandb is a view of the metrics; the run goes on without it
            logger.warning("wandb init failed (%s: %s); continuing without wandb", type(exc).__name__, exc)
            return None

    def _init_gauges(self) -> dict[str, Any]:
        from ray.util.metrics import Gauge

        gauges = {}
        for key, name in RAY_GAUGES.items():
            gauge = Gauge(name, description=f"cdra metric {key}", tag_keys=("run",))
            gauge.set_default_tags({"run": self.run_name})
            gauges[key] = gauge
        return gauges

    def _clean(self, step: int, metrics: Mapping[str, Any]) -> dict[str, int | float | None]:
        if not isinstance(metrics, Mapping):
            raise ValueError(f"Tracker.log(step={step}): metrics must be a dict, got {type(metrics).__name__}")
        clean: dict[str, int | float | None] = {}
        for key, value in metrics.items():
            if not isinstance(key, str) or key == "step":
                raise ValueError(f"Tracker.log(step={step}): metric key {key!r} is not allowed (must be a str, not 'step')")
            if not _is_number(value):
                raise ValueError(
                    f"Tracker.log(step={step}): metric {key!r} must be a number, got {type(value).__name__} {value!r}"
                )
            clean[key] = _json_number(value)
            if clean[key] is None and key not in self._warned_nonfinite:
                self._warned_nonfinite.add(key)
                logger.warning("metric %r is %s at step %d; written as null (warned once per key)", key, value, step)
        return clean

    def log(self, step: int, metrics: dict[str, float]) -> None:
        step = _check_step(step, "Tracker.log")
        clean = self._clean(step, metrics)
        with self.metrics_path.open("a") as f:
            f.write(json.dumps({"step": step, **clean}) + "\n")
        self._log_wandb(step, clean)
        self._set_gauges(step, clean)

    def _log_wandb(self, step: int, clean: dict[str, int | float | None]) -> None:
        if self.wandb_run is None:
            return
        try:
            self.wandb_run.log({k: v for k, v in clean.items() if v is not None}, step=step)
        except Exception as exc:
            logger.warning("wandb log failed at step %d (%s); disabling wandb for this run", step, exc)
            self.wandb_run = None

    def _set_gauges(self, step: int, clean: dict[str, int | float | None]) -> None:
        values = {**clean, "step": step}
        for key, gauge in self.gauges.items():
            if values.get(key) is not None:
                gauge.set(float(values[key]))

    def summary_line(self, step: int, metrics: dict) -> str:
        """`step 3 | loss 1.23e-02 | reward/mean 0.412`: step first, then up to 10 keys by name."""
        parts = [f"step {step}"]
        parts += [f"{key} {format_value(metrics[key])}" for key in summary_keys(metrics)]
        return " | ".join(parts)

    def plot(self, keys: list[str], path: str | Path | None = None) -> Path:
        """PNG with one panel per key (value vs step) from metrics.jsonl; absent keys are skipped."""
        if not keys:
            raise ValueError("Tracker.plot: keys must name at least one metric")
        path = Path(path) if path is not None else self.output_dir / "reward_curve.png"
        rows = read_metrics(self.metrics_path)
        series = {}
        for key in keys:
            points = [(row["step"], row[key]) for row in rows if row.get(key) is not None]
            if points:
                series[key] = points
            else:
                logger.warning("Tracker.plot: no values for %r in %s; skipping it", key, self.metrics_path)

        fig = Figure(figsize=(6, 2.5 * max(len(series), 1)))
        FigureCanvasAgg(fig)  # attaches an Agg canvas; no pyplot, so no global backend state
        if series:
            axes = fig.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
            for ax, (key, points) in zip(axes, series.items()):
                steps, values = zip(*points)
                ax.plot(steps, values, marker="o", markersize=3)
                ax.set_ylabel(key)
                ax.grid(alpha=0.3)
            axes[-1].set_xlabel("step")
        else:
            fig.text(0.5, 0.5, f"no data for {', '.join(keys)}", ha="center", va="center")
        fig.suptitle(self.run_name)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
        return path

    def close(self) -> None:
        if self.wandb_run is not None:
            try:
                self.wandb_run.finish()
            except Exception as exc:
                logger.warning("wandb finish failed (%s)", exc)
            self.wandb_run = None
