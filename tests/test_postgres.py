"""The cluster stores on a real PostgreSQL server: amctl's registry, MLflow's backend and the Optuna studies
in three databases, switched by one setting each; a small sweep gives the same results as on SQLite.

The server is Debian's PostgreSQL (`.ci/run` installs it), started here on loopback in a temporary
folder with initdb/pg_ctl, as the `postgres` user when the tests run as root.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import free_port
from mlflow.tracking import MlflowClient

from amlab.platform.api import plan
from amlab.platform.results import cell_results
from amlab.platform.status import Kind
from amlab.platform.store import Store
from amlab.platform.sweep import run_sweep

REPO = Path(__file__).resolve().parents[1]
DATABASES = ("amctl", "mlflow", "optuna")  # MLflow and Optuna each keep their own Alembic schema


@pytest.fixture(scope="module")
def postgres():
    """A private PostgreSQL server on 127.0.0.1 with the three databases; yields the server URL (no database)."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.skip("PostgreSQL is not installed (.ci/run installs Debian's postgresql package)")
    bindir = Path(bins[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="amctl-pg-", dir="/tmp"))
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True, timeout=120)  # noqa: E731
    run(str(bindir / "initdb"), "-D", str(root / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    run(str(bindir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "log"), "-w", "start",
        "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off")
    try:
        for db in DATABASES:
            run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", db)
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def small_sweep() -> dict:
    return {"name": "pg-equal", "mechanisms": {"lstm": {"d_model": 16}}, "tasks": {"copy": {"max_len": 4, "test_lens": [4, 8]}},
            "seeds": [0, 1], "train": {"steps": 20, "batch_size": 8, "eval_every": 10, "log_every": 10, "eval_batches": 1},
            "search": {"trials": 2, "scheduler": "fifo", "seed": 0}}


@pytest.mark.ray
def test_sweep_on_postgresql_equals_the_same_sweep_on_sqlite(ray_local, ray_cluster, settings, postgres, tmp_path):
    launch = plan(Kind.SWEEP, small_sweep())
    assert run_sweep(launch, settings).status == "FINISHED"  # the session's embedded SQLite stores
    on_sqlite = cell_results(Store(settings.db_url), "pg-equal")

    # the same sweep, submitted through the Jobs API with every store switched by one setting
    pg = {"AMCTL_DB_URL": f"{postgres}/amctl", "MLFLOW_TRACKING_URI": f"{postgres}/mlflow",
          "AMCTL_OPTUNA_URL": f"{postgres}/optuna", "AMCTL_RAY_STORAGE": str(tmp_path / "ray")}
    spec_file = tmp_path / "pg.yaml"
    spec_file.write_text(yaml.safe_dump(small_sweep()))
    res = subprocess.run([sys.executable, str(REPO / "amctl.py"), "launch", "sweep", str(spec_file), "--json",
                          "--address", ray_cluster.jobs_address], env={**os.environ, **pg},
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    on_pg = cell_results(Store(pg["AMCTL_DB_URL"]), "pg-equal")

    assert len(on_pg) == len(on_sqlite) == 1
    for a, b in zip(on_sqlite, on_pg, strict=True):
        assert b["status"] == "FINISHED" and a["status"] == "FINISHED"
        assert b["per_seed"] == a["per_seed"] and b["value"] == a["value"]
        assert b["best_params"] == a["best_params"] and b["params_count"] == a["params_count"]

    # the trial processes logged to PostgreSQL: MLflow runs, metric histories, Optuna trials are there
    with Store(pg["AMCTL_DB_URL"]).session() as s:
        store_runs = {t.mlflow_run_id for c in Store(pg["AMCTL_DB_URL"]).sweep(s, "pg-equal").cells for t in c.trials}
    client = MlflowClient(pg["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("pg-equal")  # a sweep files its runs in its own experiment
    runs = client.search_runs([exp.experiment_id], "tags.`amctl.sweep` = 'pg-equal'")
    trial_runs = {r.info.run_id for r in runs if r.data.tags["amctl.kind"] == "trial"}
    assert trial_runs == store_runs and len(trial_runs) == 4  # 2 searched + the chosen one on seeds 0 and 1
    for run_id in trial_runs:
        assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [10, 20]
    study = optuna.load_study(study_name=f"pg-equal:{launch.cells[0].key}", storage=pg["AMCTL_OPTUNA_URL"])
    assert len(study.trials) == 2

    # `amctl server` serves that MLflow backend
    port = free_port()
    server = subprocess.Popen([sys.executable, str(REPO / "amctl.py"), "server", "--port", str(port), "--workers", "1",
                               "--backend", pg["MLFLOW_TRACKING_URI"], "--artifacts", str(tmp_path / "artifacts")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()[-3000:]
                time.sleep(0.5)
        served = MlflowClient(f"http://127.0.0.1:{port}")
        assert {r.info.run_id for r in served.search_runs([exp.experiment_id], "tags.`amctl.sweep` = 'pg-equal'")} == \
            {r.info.run_id for r in runs}
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    assert json.loads(res.stdout[res.stdout.index("{\n"):res.stdout.rindex("}") + 1])["status"] == "FINISHED"
