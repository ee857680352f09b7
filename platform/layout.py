"""Where amctl's code lives: the package roots, as pyproject.toml maps them (a test keeps the two equal).

Job staging copies exactly these; the node image builds the wheel that
pyproject describes from the whole build context, so neither keeps a list
of its own.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOTS = {"amlab.platform": "platform", "amlab.workloads": "workloads", "amlab.dashboards": "dashboards"}  # import -> folder
MODULES = ("amctl",)  # top-level modules (the CLI)


def source(import_name: str) -> Path:
    """The folder (package) or file (module) an import name is loaded from, editable install or not."""
    spec = importlib.util.find_spec(import_name)
    if spec is None:
        raise ModuleNotFoundError(import_name)
    return Path(spec.submodule_search_locations[0]) if spec.submodule_search_locations else Path(spec.origin)
