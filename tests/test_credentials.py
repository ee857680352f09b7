"""Credentials never travel through Ray: what is redacted, what is withheld from a job, and the clear error when
a cluster lacks what was withheld (no Ray needed here; the paths through Ray are in test_remote and test_sweep)."""

from __future__ import annotations

import json

import pytest

from amlab.platform.errors import StoreError
from amlab.platform.settings import WITHHELD, Settings, check_withheld, redact, split_secrets

PG = "postgresql://amctl:s3cret-pw@db.internal:5432/amctl"


def test_a_password_in_a_url_is_shown_as_stars_and_nothing_else_changes():
    assert redact(PG) == "postgresql://amctl:***@db.internal:5432/amctl"
    assert redact("postgresql+psycopg://u:p%40ss@h/db?sslmode=require") == "postgresql+psycopg://u:***@h/db?sslmode=require"
    for url in ("sqlite:////home/me/.amctl/amctl.db", "postgresql://postgres@127.0.0.1:5432/mlflow", "http://mlflow:5000",
                "s3://bucket/prefix", "/plain/path"):
        assert redact(url) == url


def test_credentials_are_withheld_from_what_travels_and_the_rest_is_kept():
    env = {"AMCTL_DB_URL": PG, "MLFLOW_TRACKING_URI": "http://mlflow:5000", "MLFLOW_TRACKING_TOKEN": "tok-123",
           "AMCTL_HOME": "/data/amctl"}
    public, withheld = split_secrets(env)
    assert public == {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "AMCTL_HOME": "/data/amctl"}
    assert withheld == {"AMCTL_DB_URL": redact(PG), "MLFLOW_TRACKING_TOKEN": "***"}
    assert "s3cret" not in json.dumps(withheld) and "tok-123" not in json.dumps(withheld)


def test_a_job_driver_refuses_to_start_without_the_withheld_credentials(monkeypatch):
    monkeypatch.setenv(WITHHELD, json.dumps({"AMCTL_DB_URL": redact(PG), "MLFLOW_TRACKING_TOKEN": "***"}))
    monkeypatch.delenv("AMCTL_DB_URL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    with pytest.raises(StoreError) as e:
        check_withheld()
    assert e.value.exit_code == 2 and "never sends credentials through Ray" in e.value.message
    assert [p.split(" ")[0] for p in e.value.problems] == ["AMCTL_DB_URL", "MLFLOW_TRACKING_TOKEN"]
    monkeypatch.setenv("AMCTL_DB_URL", PG.replace("s3cret-pw", "another"))  # the same store, whatever the password
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-on-the-cluster")
    check_withheld()
    monkeypatch.setenv("AMCTL_DB_URL", PG.replace("db.internal", "elsewhere"))
    with pytest.raises(StoreError):
        check_withheld()


def test_the_mlflow_server_gets_its_database_url_in_its_environment_not_its_command_line(monkeypatch, tmp_path):
    import os

    from amlab.platform import api
    from amlab.platform.errors import BadInput

    monkeypatch.setenv("AMCTL_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_BACKEND_STORE_URI", raising=False)
    cmd = api.server_command(5000, "0.0.0.0", PG.replace("/amctl", "/mlflow"), "s3://bucket/artifacts", 2)
    assert not any("s3cret" in part or part.startswith("postgresql") for part in cmd)
    assert os.environ["MLFLOW_BACKEND_STORE_URI"] == PG.replace("/amctl", "/mlflow")  # what the child inherits
    monkeypatch.setenv("AMCTL_ARTIFACTS", "mlflow-artifacts:/experiments")  # the clients' view: not a destination
    with pytest.raises(BadInput, match="give --artifacts"):
        api.server_command(5000, "0.0.0.0", None, None, 2)
    cmd, _, _ = api.ui_command(5001, False)
    assert "--backend-store-uri" not in cmd and os.environ["MLFLOW_BACKEND_STORE_URI"].startswith("sqlite:")


def test_no_usage_statistics_or_telemetry_leave_the_machine(tmp_path):
    """Ray's usage stats and MLflow's telemetry are off in every amctl process and in what it hands its workers."""
    import subprocess
    import sys

    code = ("import os, amlab.platform.settings as s; "
            "print(all(os.environ[k] == v for k, v in s.OFFLINE.items()), sorted(s.OFFLINE))")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("RAY_USAGE_STATS_ENABLED", "DO_NOT_TRACK",
                                                                            "MLFLOW_DISABLE_TELEMETRY")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True ['DO_NOT_TRACK', 'MLFLOW_DISABLE_TELEMETRY', 'RAY_USAGE_STATS_ENABLED']"


def test_one_setting_puts_everything_durable_in_a_bucket_and_a_server_keeps_its_artifacts(monkeypatch, tmp_path):

    monkeypatch.setenv("AMCTL_HOME", str(tmp_path))
    monkeypatch.setenv("AMCTL_STORAGE", "s3://lab-bucket/amctl/")
    both = Settings.load()
    assert (both.artifacts, both.ray_storage) == ("s3://lab-bucket/amctl/artifacts", "s3://lab-bucket/amctl/tune")
    monkeypatch.delenv("AMCTL_STORAGE")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    served = Settings.load()  # the server's --serve-artifacts proxy decides where artifacts go, not a forced file://
    assert served.artifacts == "" and served.ray_storage == str(tmp_path / "ray")
    monkeypatch.setenv("AMCTL_ARTIFACTS", "gs://other/x")  # an explicit location still wins
    assert Settings.load().artifacts == "gs://other/x"
