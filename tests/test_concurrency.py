"""Several drivers and readers at once on one fresh AMCTL_HOME: the schema is created once, every sweep is
recorded and finishes, and no reader sees an error (SQLite in WAL mode with busy timeouts, migrations under a lock)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from amlab.platform.status import Status
from amlab.platform.store import Store

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]
AMCTL = [sys.executable, str(REPO / "amctl.py")]


def small(name: str, mechanism: str) -> dict:
    return {"name": name, "mechanisms": {mechanism: {"d_model": 16}}, "tasks": {"copy": {"max_len": 4, "test_lens": [4]}},
            "seeds": [0], "train": {"steps": 40, "batch_size": 8, "eval_every": 20, "log_every": 20, "eval_batches": 1},
            "search": {"trials": 1, "scheduler": "fifo"}}


def test_three_sweeps_and_status_readers_at_once_on_a_fresh_home(ray_local, tmp_path):
    home = tmp_path / "fresh-home"  # does not exist yet: the first of these processes creates it and the schema
    env = {**os.environ, "AMCTL_HOME": str(home), "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    for var in ("AMCTL_DB_URL", "MLFLOW_TRACKING_URI", "AMCTL_OPTUNA_URL", "AMCTL_RAY_STORAGE"):
        env.pop(var, None)
    names = {"conc-a": "lstm", "conc-b": "gru", "conc-c": "rnn"}
    for name, mechanism in names.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(small(name, mechanism)))
    launches = [subprocess.Popen([*AMCTL, "launch", "sweep", str(tmp_path / f"{n}.yaml"), "--json"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in names]
    readers, alive = [], []
    deadline = time.time() + 600
    while any(p.poll() is None for p in launches):  # status readers all along, two at a time (each imports for seconds)
        alive = [r for r in alive if r.poll() is None]
        while len(alive) < 2:
            alive.append(subprocess.Popen([*AMCTL, "status", "--json"], env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
            readers.append(alive[-1])
        time.sleep(0.5)
        assert time.time() < deadline, "the sweeps never ended"
    for p in launches:
        out, err = p.communicate()
        assert p.returncode == 0, f"{err[-3000:]}\n{out[-2000:]}"
        assert json.loads(out)["status"] == Status.FINISHED
        # each driver let Ray go once its trials were over, then closed its records and published its report
        client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
        assert {"report/report.html", "report/report.md"} <= {a.path for a in client.list_artifacts(
            json.loads(out)["mlflow_run_id"], "report")}, err[-3000:]
    for r in readers:
        out, err = r.communicate(timeout=120)
        assert r.returncode == 0 and "Traceback" not in err, err[-2000:]
        assert isinstance(json.loads(out), list)
    store = Store(f"sqlite:///{home / 'amctl.db'}")
    with store.session() as s:
        for name in names:
            sweep = store.sweep(s, name)
            assert sweep.status == Status.FINISHED and all(c.status == Status.FINISHED for c in sweep.cells)
