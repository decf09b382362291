"""Compare runs per question, side by side over seeds (`cdra.recipes.compare`).

    python jobs/compare.py --arm cdra=outputs/cdra-s0,outputs/cdra-s1 --arm grpo=outputs/grpo-s0,outputs/grpo-s1 \\
        --field correct --field process_accuracy

Runs of one arm are listed in seed order; the i-th run of every arm is paired with the i-th of
the others. Prints markdown tables (gained / lost questions and the two-sided sign test)."""

from __future__ import annotations

import argparse
import sys

from cdra.recipes.compare import comparison_table, load_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
