"""Shared fixtures.

One Ray instance per test session (ray.init costs seconds, and two Ray
instances on one machine break Ray's cleanup); one private AMCTL_HOME.
"""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)

for var in ("AMCTL_DB_URL", "MLFLOW_TRACKING_URI", "AMCTL_OPTUNA_URL", "AMCTL_RAY_STORAGE", "AMCTL_ARTIFACTS", "RAY_ADDRESS"):
    os.environ.pop(var, None)


@pytest.fixture
def seeded():
    torch.manual_seed(0)
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="session")
def settings(tmp_path_factory):
    """A private AMCTL_HOME for the whole session (the CLI and Ray workers read it from the environment)."""
    from amlab.platform.settings import Settings

    os.environ["AMCTL_HOME"] = str(tmp_path_factory.mktemp("amctl-home"))
    return Settings.load()


@pytest.fixture(scope="session")
def ray_local(settings):
    """The session's embedded Ray, started the way amctl starts it."""
    import ray

    from amlab.platform.launch import ensure_ray

    ensure_ray(settings)
    yield ray
    ray.shutdown()
