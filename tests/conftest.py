"""Shared fixtures.

One Ray instance per test session (ray.init costs seconds, and two Ray
instances on one machine break Ray's cleanup); one private AMCTL_HOME.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import sys
import tempfile

import pytest
import torch

torch.set_num_threads(1)

# the session's own cache folder (platform/schema_cache.py fills it once, for every fresh home of the session and
# the processes the tests start): nothing is read from, or left in, the user's ~/.cache
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="amctl-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)

for var in ("AMCTL_DB_URL", "MLFLOW_TRACKING_URI", "AMCTL_OPTUNA_URL", "AMCTL_RAY_STORAGE", "AMCTL_ARTIFACTS", "AMCTL_STORAGE",
            "RAY_ADDRESS",
            "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
    os.environ.pop(var, None)


def pytest_collection_modifyitems(items):
    """Tests that start their own embedded Ray run first, before the session's cluster exists (one Ray at a time)."""
    items.sort(key=lambda item: item.get_closest_marker("embedded") is None)


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command_line(p) -> str:
    """A process's command line, or "" when it has gone or is a zombie not yet reaped (Ray's start-up leaves
    short-lived children): a process tree read while it changes must not fail the test."""
    import psutil

    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


@pytest.fixture(scope="session")
def ray_cluster(settings):
    """The session's one Ray: a head with the dashboard (Jobs API) and a second node, 1 CPU each, token auth on.

    Two nodes on one machine is how Ray tests itself (`ray.cluster_utils.Cluster`); a DDP trial with
    two workers has to span both.  The token lives in the environment, so subprocesses (the CLI, Ray
    jobs) inherit it; tests that check a missing or wrong token override it in a child's environment.
    """
    from ray.cluster_utils import Cluster

    # the cluster's Python is this one, as on a node built from cluster/Dockerfile (a job runs `python amctl.py ...`)
    os.environ["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")  # `import ray` (at collection) cached the auth mode; read it again, as Ray does
    AuthenticationTokenLoader.instance().reset_cache()
    port = free_port()
    node = {"num_cpus": 1, "object_store_memory": 200 * 1024**2}
    # each node its own short temp dir (unix socket paths <= 107 bytes), as separate machines have separate disks:
    # a node that drops a job's working_dir from its cache must not delete the other node's copy
    dirs = [tempfile.mkdtemp(prefix="amctl-ray-", dir="/tmp") for _ in range(2)]
    cluster = Cluster(initialize_head=True, head_node_args={**node, "temp_dir": dirs[0], "include_dashboard": True,
                                                            "dashboard_port": port, "dashboard_host": "127.0.0.1"})
    cluster.add_node(**node, temp_dir=dirs[1])
    cluster.jobs_address = f"http://127.0.0.1:{port}"
    yield cluster
    cluster.shutdown()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_local(settings, ray_cluster):
    """The driver of this test process, joined to the session's cluster the way amctl joins one."""
    import ray

    from amlab.platform.ray_runtime import ensure_ray

    ensure_ray(settings, ray_cluster.address)
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
    from amlab.platform.api import plan
    from amlab.platform.status import Kind
    from amlab.platform.sweep import run_sweep

    launch = plan(Kind.SWEEP, {
        "name": REPORT_SWEEP,
        "mechanisms": {"lstm": {"d_model": 16}, "transformer": {"d_model": 16, "heads": 2}},
        "tasks": {"copy": {"max_len": 4, "test_lens": [4, 8]}, "mqar": {"vocab_size": 64, "seq_len": 16, "num_kv_pairs": 2}},
        "seeds": [0, 1],
        "train": {"steps": 30, "batch_size": 8, "eval_every": 10, "log_every": 10, "eval_batches": 1},
        "search": {"trials": 2, "scheduler": "asha", "grace_evals": 1, "reduction_factor": 2},
    })
    assert run_sweep(launch, settings).status == "FINISHED"
    out = tmp_path_factory.mktemp("report")
    res = CliRunner().invoke(amctl.app, ["report", REPORT_SWEEP, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out
