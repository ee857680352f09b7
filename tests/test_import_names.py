"""`platform/` must never shadow the standard library's `platform` (DESIGN.md, "Import names")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = "import platform, ray, mlflow, torch; print(platform.system())"


def test_no_init_in_platform_folder():
    assert not (REPO / "platform" / "__init__.py").exists()


def test_stdlib_platform_wins_from_repo_root():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "Linux"


def test_amlab_platform_is_the_folder():
    import amlab.platform.spec

    assert Path(amlab.platform.spec.__file__).resolve().parent == REPO / "platform"


@pytest.mark.ray
def test_stdlib_platform_wins_inside_ray_task_with_repo_working_dir(ray_local):
    @ray_local.remote
    def probe():
        import os
        import platform

        import mlflow  # noqa: F401
        import torch  # noqa: F401

        return platform.system(), os.path.exists("platform/spec.py")

    system, shipped = ray_local.get(probe.options(runtime_env={"working_dir": str(REPO)}).remote(), timeout=300)
    assert system == "Linux"
    assert shipped, "the task did not run inside the shipped working_dir"
