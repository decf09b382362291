"""Side by side (``python -m cdra.recipes.compare --arm NAME=DIR,DIR --arm ...``): runs of several arms (recipes or settings), one run per seed, compared per
question on their held-out evaluation records (`<output_dir>/eval/<tag>-step<N>.jsonl`, written
by `Session.evaluate`). Each arm's last evaluation is compared with its own first (the shared
start) and with every other arm's at the same seed position; counts are also pooled over seeds.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from cdra.algos.paired import PairedCounts, paired_counts, sign_test_p
from cdra.recipes.evaluation import read_eval_records

__all__ = ["RunRecords", "load_run", "comparison_table", "main"]

_RECORD_FILE = re.compile(r"(?P<tag>.+)-step(?P<step>\d+)\.jsonl")


@dataclass
class RunRecords:
    path: str
    first_step: int
    last_step: int
    first: list[dict]
    last: list[dict]


def load_run(output_dir: str, tag: str = "eval") -> RunRecords:
    """The first and last evaluation of one run; a one-line error when it has none."""
    files = {}
    for f in (Path(output_dir) / "eval").glob(f"{tag}-step*.jsonl"):
        m = _RECORD_FILE.fullmatch(f.name)
        if m and m["tag"] == tag:
            files[int(m["step"])] = f
    if not files:
        raise FileNotFoundError(f"{output_dir}: no evaluation records {tag}-step*.jsonl under eval/ (a run of this version of cdra writes them)")
    first, last = min(files), max(files)
    return RunRecords(output_dir, first, last, read_eval_records(files[first]), read_eval_records(files[last]))


def outcomes(records: list[dict], field: str) -> dict[str, float]:
    values = {r["id"]: float(r[field]) for r in records if r.get(field) is not None}
    if not values:
        raise KeyError(f"no evaluation record has the field {field!r}")
    return values


def _pooled(counts: list[PairedCounts]) -> str:
    gained, lost = sum(c.gained for c in counts), sum(c.lost for c in counts)
    return f"+{gained} / -{lost} (p {sign_test_p(gained, lost):.3f})"


def comparison_table(arms: dict[str, list[RunRecords]], field: str) -> str:
    """Markdown: each arm's start and end per seed with gained/lost against its start, then
    every pair of arms per seed (B's gains and losses against A), pooled over seeds."""
    seeds = min(len(runs) for runs in arms.values())
    lines = [f"### {field}", "", "| arm | start | " + " | ".join(f"seed {i}" for i in range(seeds)) + " | mean | vs start, pooled |",
             "|---|---|" + "---|" * seeds + "---|---|"]
    for name, runs in arms.items():
        against_start = [paired_counts(outcomes(r.first, field), outcomes(r.last, field)) for r in runs[:seeds]]
        cells = [f"{c.b_mean:.3f} (+{c.gained}/-{c.lost})" for c in against_start]
        mean = sum(c.b_mean for c in against_start) / seeds
        lines.append(f"| {name} | {against_start[0].a_mean:.3f} | " + " | ".join(cells) + f" | {mean:.3f} | {_pooled(against_start)} |")
    names = list(arms)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    if pairs:
        lines += ["", "| B vs A | " + " | ".join(f"seed {i}" for i in range(seeds)) + " | pooled |", "|---|" + "---|" * seeds + "---|"]
        for a, b in pairs:
            counts = [paired_counts(outcomes(ra.last, field), outcomes(rb.last, field)) for ra, rb in zip(arms[a][:seeds], arms[b][:seeds])]
            cells = [f"{c.delta:+.3f} (+{c.gained}/-{c.lost}, p {c.p:.2f})" for c in counts]
            lines.append(f"| {b} vs {a} | " + " | ".join(cells) + f" | {_pooled(counts)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare runs per question, side by side over seeds.")
    parser.add_argument("--arm", action="append", required=True, help="NAME=DIR[,DIR...] (one run directory per seed)")
    parser.add_argument("--field", action="append", help="a 0/1 field of the evaluation records (default: correct)")
    parser.add_argument("--tag", default="eval", help="which evaluation (records eval/<tag>-step<N>.jsonl)")
    args = parser.parse_args(argv)
    arms = {}
    try:
        for spec in args.arm:
            name, _, dirs = spec.partition("=")
            if not name or not dirs:
                raise ValueError(f"--arm {spec!r}: expected NAME=DIR[,DIR...]")
            arms[name] = [load_run(d, args.tag) for d in dirs.split(",")]
        for field in args.field or ["correct"]:
            print(comparison_table(arms, field))
    except (ValueError, KeyError, FileNotFoundError) as e:
        print(f"compare: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
