"""`python -m cdra.models.zoo list` | `build NAME|all [--root DIR]` | `ship NAME RUN_DIR [--root DIR]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cdra.models.zoo import JOB_BUILDS, RECIPES, ZOO_ROOT, checkpoint_dir, read_card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cdra.models.zoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the checkpoints, their digests and held-out accuracy")
    build = sub.add_parser("build", help="rebuild checkpoints through the SFT recipe (learner group)")
    build.add_argument("names", nargs="+", help=f"checkpoint names ({', '.join(RECIPES)}) or 'all'")
    build.add_argument("--root", type=Path, default=ZOO_ROOT, help="where to write (default: the package's zoo)")
    ship = sub.add_parser("ship", help="copy a job-built checkpoint from its final job's run directory into the zoo")
    ship.add_argument("name", choices=sorted(JOB_BUILDS))
    ship.add_argument("run_dir", type=Path)
    ship.add_argument("--root", type=Path, default=ZOO_ROOT, help="where to write (default: the package's zoo)")
    args = parser.parse_args(argv)
    if args.command == "ship":
        from cdra.models.zoo.build import ship as ship_one

        path = ship_one(args.name, args.run_dir, args.root)
        print(f"[cdra] shipped {args.name} at {path}: held-out {read_card(args.name, args.root)['heldout']}")
        return 0
    if args.command == "list":
        for name, recipe in RECIPES.items():
            card_file = checkpoint_dir(name) / "card.json"
            shipped = read_card(name) if card_file.exists() else None
            state = "missing" if shipped is None else ("current" if shipped["digest"] == recipe.digest() else "stale")
            accuracy = "" if shipped is None else f"held-out accuracy {shipped['heldout']['accuracy']:.3f}"
            print(f"{name:8s} {recipe.digest()} {state:8s} {accuracy}")
        return 0
    from cdra.models.zoo.build import BUILD_ORDER
    from cdra.models.zoo.build import build as build_one

    names = list(BUILD_ORDER) if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        print(f"unknown zoo checkpoint(s) {unknown}; known: {sorted(RECIPES)}", file=sys.stderr)
        return 2
    for name in names:
        path = build_one(name, args.root)
        card = read_card(name, args.root)
        print(f"[cdra] built {name} at {path} in {card['build_seconds']:.0f} s: held-out {card['heldout']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
