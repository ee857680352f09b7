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


JOB = """
import os, sys, ray
ray.init(address=sys.argv[1], runtime_env={"working_dir": sys.argv[2]}, log_to_driver=False)

@ray.remote
def probe():
    import platform

    import mlflow, torch  # noqa: F401  (both import the standard platform module)

    return platform.system(), os.path.exists("platform/spec.py"), os.getcwd()

print(*ray.get(probe.remote(), timeout=300), sep="|")
"""


@pytest.mark.ray
def test_stdlib_platform_wins_inside_ray_job_with_repo_working_dir(ray_local, tmp_path):
    """A Ray job whose working_dir is the repo (the folder is shipped and becomes the workers' cwd)."""
    out = subprocess.run([sys.executable, "-c", JOB, ray_local.get_runtime_context().gcs_address, str(REPO)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    system, shipped, cwd = out.stdout.strip().splitlines()[-1].split("|")
    assert system == "Linux"
    assert shipped == "True" and cwd != str(REPO), "the task did not run inside the shipped working_dir copy"
