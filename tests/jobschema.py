"""The config schema of a job script, found by reading the script (no import, no `__main__`).

A job is a thin file that imports its recipe's `...Config` dataclass from `cdra.recipes.*`;
the tests of presets and README commands check keys against that schema.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def job_schema(job: str | Path) -> type:
    """The `cdra.recipes.<x>.<Name>Config` class that `jobs/<job>.py` imports."""
    path = REPO / job
    tree = ast.parse(path.read_text(), filename=str(path))
    found = [
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cdra.recipes")
        for alias in node.names
        if alias.name.endswith("Config")
    ]
    if len(found) != 1:
        raise LookupError(f"{job}: expected one cdra.recipes *Config import, found {found}")
    module, name = found[0]
    return getattr(importlib.import_module(module), name)
