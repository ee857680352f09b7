"""Remote submission through the Ray Jobs API, against the session's real 2-node cluster (token auth on).

The CLI is run as a subprocess, as a user runs it: validation here, submission to the dashboard's
Jobs API, the job's log streamed back, its exit code returned; `amctl jobs`, `logs` and `cancel`
work against the same cluster.
"""

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
from ray.job_submission import JobSubmissionClient
from ray.util.state import list_actors

from amlab.platform.store import Store, Trial

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]


def ddp_sweep(name: str, steps: int = 20) -> dict:
    return {"name": name, "mechanisms": {"gru": {"d_model": 16}}, "tasks": {"copy": {"max_len": 4, "test_lens": [4]}},
            "seeds": [0], "train": {"steps": steps, "batch_size": 8, "eval_every": 10, "log_every": 10, "eval_batches": 1},
            "search": {"trials": 1, "scheduler": "fifo"}, "resources": {"workers_per_trial": 2}}


def amctl(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "amctl.py"), *args], env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=timeout)


def test_remote_ddp_sweep_spans_both_nodes_and_streams_its_log(ray_local, ray_cluster, settings, tmp_path):
    url = ray_cluster.jobs_address
    spec = tmp_path / "remote.yaml"
    spec.write_text(yaml.safe_dump(ddp_sweep("remote-ddp")))
    res = amctl("launch", "sweep", str(spec), "--address", url, "--json")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "as job amctl-remote-ddp-1" in res.stderr and "SUCCEEDED" in res.stderr
    out = json.loads(res.stdout[res.stdout.index("{\n"):res.stdout.rindex("}") + 1])  # the job's stdout, streamed here
    assert out["status"] == "FINISHED" and out["cells"][0]["value"] is not None

    info = JobSubmissionClient(url).get_job_info("amctl-remote-ddp-1")
    assert info.status == "SUCCEEDED" and info.metadata == {"amctl.kind": "sweep", "amctl.name": "remote-ddp"}
    workers = list_actors(address=ray_local.get_runtime_context().gcs_address, detail=True, limit=10000,
                          filters=[("class_name", "=", "RayTrainWorker"), ("job_id", "=", info.job_id)])
    # two DDP trials (the search seed, then seed 0), each a placement group of 2 workers that must span both nodes
    groups: dict[str, set] = {}
    for w in workers:
        groups.setdefault(w.placement_group_id, set()).add(w.node_id)
    assert len(workers) == 4 and len(groups) == 2, workers
    assert all(len(nodes) == 2 for nodes in groups.values()), "the two DDP workers of a trial shared a node"

    store = Store(settings.db_url)  # the job wrote to the stores named by the submitter's environment
    with store.session() as s:
        sweep = store.sweep(s, "remote-ddp")
        assert sweep.status == "FINISHED"
        trial = sweep.cells[0].trials[0]
        assert trial.status == "FINISHED" and trial.steps_done == 20
    assert MlflowClient(settings.mlflow_uri).get_run(trial.mlflow_run_id).info.status == "FINISHED"

    listed = json.loads(amctl("jobs", "--address", url, "--json").stdout)
    assert {"job": "amctl-remote-ddp-1", "status": "SUCCEEDED", "name": "remote-ddp", "kind": "sweep"}.items() <= \
        next(j for j in listed if j["job"] == "amctl-remote-ddp-1").items()
    logged = amctl("logs", "amctl-remote-ddp-1", "--address", url)
    assert logged.returncode == 0 and '"status": "FINISHED"' in logged.stdout


def test_bad_spec_is_rejected_before_any_submission(ray_cluster, tmp_path):
    url = ray_cluster.jobs_address
    before = len(JobSubmissionClient(url).list_jobs())
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**ddp_sweep("bad-remote"), "mechanisms": ["lsmt"]}))
    res = amctl("launch", "sweep", str(bad), "--address", url)
    assert res.returncode == 2 and "mechanisms.lsmt: unknown mechanism" in res.stderr
    assert len(JobSubmissionClient(url).list_jobs()) == before


@pytest.mark.parametrize("case", ["wrong", "missing"])
def test_wrong_or_missing_token_is_a_clear_error(ray_cluster, tmp_path, case):
    env = {**os.environ, "HOME": str(tmp_path)}  # no ~/.ray/auth_token to fall back on
    if case == "wrong":
        env["RAY_AUTH_TOKEN"] = "0" * 32
    else:
        for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
            env.pop(var, None)
    res = amctl("jobs", "--address", ray_cluster.jobs_address, env=env, timeout=120)
    assert res.returncode == 2
    text = " ".join(res.stderr.split())
    assert f"the Ray cluster at {ray_cluster.jobs_address} refused the request" in text
    assert ("Authentication failed" if case == "wrong" else "Authentication required") in text
    assert "RAY_AUTH_MODE=token" in text and "RAY_AUTH_TOKEN" in text


def test_cancel_stops_the_remote_job_and_closes_its_records(ray_local, ray_cluster, settings, tmp_path):
    url = ray_cluster.jobs_address
    spec = tmp_path / "long.yaml"
    spec.write_text(yaml.safe_dump({**ddp_sweep("remote-cancel", steps=5000), "resources": {"workers_per_trial": 1}}))
    launch = subprocess.Popen([sys.executable, str(REPO / "amctl.py"), "launch", "sweep", str(spec), "--address", url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = Store(settings.db_url)
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until the trial trains
        with store.session() as s:
            rows = [t for t in s.query(Trial).all() if t.cell.sweep.name == "remote-cancel"]
        if any(t.status == "RUNNING" and t.steps_done > 0 for t in rows):
            break
        assert launch.poll() is None, launch.communicate()[1][-3000:]
        time.sleep(1)
    else:
        pytest.fail("the remote sweep never got going")

    res = amctl("cancel", "remote-cancel", "--address", url)
    assert res.returncode == 0 and "job amctl-remote-cancel-1: STOPPED" in res.stdout, res.stdout + res.stderr
    _, err = launch.communicate(timeout=120)
    assert launch.returncode == 130, err[-3000:]
    with store.session() as s:
        sweep = store.sweep(s, "remote-cancel")
        assert sweep.status == "KILLED", "the job's driver did not close its sweep"
        assert {t.status for t in sweep.cells[0].trials} == {"KILLED"}
    again = amctl("cancel", "remote-cancel", "--address", url)
    assert again.returncode == 2 and "no running job for 'remote-cancel'" in again.stderr


def test_only_a_dashboard_url_means_the_jobs_api(monkeypatch):
    from amlab.platform.remote import jobs_address

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert jobs_address(None) is None and jobs_address("10.0.0.1:6379") is None
    assert jobs_address("http://head:8265/") == "http://head:8265"
    monkeypatch.setenv("RAY_ADDRESS", "https://ray.example:8265")
    assert jobs_address(None) == "https://ray.example:8265" and jobs_address("10.0.0.1:6379") is None


def test_the_shipped_working_dir_is_the_code_in_its_installed_layout_and_small():
    import shutil

    from amlab.platform.remote import stage

    root = stage({"name": "x"})
    try:
        files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
        assert {"amctl.py", "spec.yaml", "amlab/platform/remote.py", "amlab/workloads/registry.py",
                "amlab/workloads/mechanisms/recurrent.py"} <= files
        assert not any("__pycache__" in f or f.startswith((".venv", "tests/", "platform/")) for f in files)
        assert "amlab/platform/__init__.py" not in files  # the installed layout: amlab.platform, never a top-level platform
        assert sum((root / f).stat().st_size for f in files) < 5 * 2**20
    finally:
        shutil.rmtree(root)
