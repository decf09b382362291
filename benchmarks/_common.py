"""Shared bits of the benchmark scripts: machine facts, load, timing helpers, RESULTS.md sections.

Each benchmark owns one section of RESULTS.md, delimited by HTML comments, and rewrites only
that section, so the scripts can run in any order and re-runs replace stale figures.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# cdra benchmarks\n\nRatios measured within one run (same process/machine/moment). Each section is rewritten by its script.\n"

# the scripts are run as `python benchmarks/NAME.py` from the repo root; make `cdra` importable either way
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# quiet engines: set before Ray starts, so its worker processes inherit it
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def load_average() -> str:
    """1/5/15-minute load averages, e.g. '2.10 1.95 1.40' (the machine is shared)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    return f"nproc={os.cpu_count()}, {platform.processor() or platform.machine()}, python {platform.python_version()}"


def cpu_clock(actor=None) -> float:
    """CPU seconds used so far by this process, or by a Ray actor's process.

    On a shared, oversubscribed machine wall time mostly measures the neighbours; CPU time
    per token is the steadier figure of the work a side actually does.
    """
    import time

    if actor is None:
        return time.process_time()
    import ray

    return ray.get(actor.__ray_call__.remote(lambda self: __import__("time").process_time()))


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(header: list[str], rows: list[list[object]]) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, title: str, body: str) -> None:
    """Replace (or append) the section `name` of RESULTS.md with `body`."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    block = f"{begin}\n## {title}\n\n_{stamp}; {machine()}_\n\n{body.strip()}\n{end}"
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text)
    print(f"[bench] wrote section {name!r} of {RESULTS}")
