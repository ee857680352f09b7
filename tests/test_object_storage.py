"""Object storage as a cluster uses it: an S3-compatible server (moto) on 127.0.0.1 holds the MLflow artifacts
and the Tune storage of a sweep on a two-node local cluster; the report is rendered from what is read back."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import free_port
from test_scaleout import check_finished, launch, sweep_spec

BUCKET = "amctl-test"
pytestmark = [pytest.mark.embedded,
              pytest.mark.skipif(shutil.which("moto_server", path=os.path.dirname(sys.executable)) is None,
                                 reason="needs moto[server] (the test extra)")]


@pytest.fixture
def s3(monkeypatch, tmp_path):
    """moto's S3 server on loopback, and the standard AWS variables every process (and node) of the test reads."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with open(tmp_path / "moto.log", "w") as log:
        server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1",
                                   "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2)
                break
            except OSError:
                time.sleep(0.25)
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                     "AWS_ENDPOINT_URL": endpoint, "MLFLOW_S3_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(k, v)  # boto3 (MLflow) and pyarrow (Ray) both read AWS_ENDPOINT_URL
        import boto3

        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client
    finally:
        server.terminate()
        server.wait(timeout=30)


def keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_a_multi_node_sweep_keeps_artifacts_and_tune_state_in_s3_and_reports_from_it(s3, tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 150 * 1024**2})
    cluster.add_node(num_cpus=1, object_store_memory=150 * 1024**2)  # started with this environment, as a node's
    home = tmp_path / "home"
    stores = {"AMCTL_STORAGE": f"s3://{BUCKET}"}  # the one setting: artifacts/ and tune/ under it
    try:
        run = launch(tmp_path, sweep_spec("on-s3", 300), cluster.address, **stores)
        out, err = run.communicate(timeout=900)
        assert run.returncode == 0, f"{err[-3000:]}\n{out[-2000:]}"
    finally:
        cluster.shutdown()
    check_finished(home, "on-s3", 300)

    # everything durable is in the bucket: each trial's checkpoint, model and dumps, the sweep's report, Tune's state
    artifacts, tune = keys(s3, "artifacts/on-s3/"), keys(s3, "tune/on-s3/")
    dumps = [k for k in artifacts if "/dumps/" in k and k.endswith(".png")]
    assert dumps and any(k.endswith("/checkpoint/state.pt") for k in artifacts)
    assert any("/report/" in k for k in artifacts) and any(k.endswith("/MLmodel") for k in artifacts)
    assert any(k.endswith("experiment_state.json") or "experiment_state" in k for k in tune), tune[:20]
    assert not (home / "artifacts").exists() and not (home / "ray").exists(), "something was kept on a node's disk"

    # the report's heatmaps are read back from S3: one of the bucket's PNGs, byte for byte
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | stores | {"AMCTL_HOME": str(home)}
    done = subprocess.run([sys.executable, "amctl.py", "report", "on-s3", "--format", "html", "--out", str(tmp_path / "r")],
                          env=env, capture_output=True, text=True, timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stderr[-3000:]
    html = next((tmp_path / "r").glob("*.html")).read_text()
    pngs = {base64.b64encode(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()).decode() for k in dumps}
    assert any(p in html for p in pngs), "the report's heatmap is none of the dumps in the bucket"
