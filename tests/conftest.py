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


REPORT_SWEEP = "reportgrid"


@pytest.fixture(scope="session")
def report_dir(ray_local, settings, tmp_path_factory):
    """One real small sweep (lstm, transformer × copy, mqar; 2 seeds) and its report in every format via the CLI.

    Shared by the report and browser tests so the sweep runs once per session.
    """
    from typer.testing import CliRunner

    import amctl
    from amlab.platform.spec import validate_sweep
    from amlab.platform.sweep import run_sweep

    spec, cells, _ = validate_sweep({
        "name": REPORT_SWEEP,
        "mechanisms": {"lstm": {"d_model": 16}, "transformer": {"d_model": 16, "heads": 2}},
        "tasks": {"copy": {"max_len": 4, "test_lens": [4, 8]}, "mqar": {"vocab_size": 64, "seq_len": 16, "num_kv_pairs": 2}},
        "seeds": [0, 1],
        "train": {"steps": 30, "batch_size": 8, "eval_every": 10, "log_every": 10, "eval_batches": 1},
        "search": {"trials": 2, "scheduler": "asha", "grace_evals": 1, "reduction_factor": 2},
    })
    assert run_sweep(spec, cells, settings).status == "FINISHED"
    out = tmp_path_factory.mktemp("report")
    res = CliRunner().invoke(amctl.app, ["report", REPORT_SWEEP, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out
