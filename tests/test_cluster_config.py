"""Cluster definitions: launcher YAMLs pass the schema that ships inside Ray; KubeRay manifests carry what KubeRay needs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import amctl
from amlab.platform.cluster_config import check

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_config_passes_rays_schema_with_a_cpu_head_and_spot_gpu_workers_from_zero(name):
    path = CLUSTER / name
    assert check(path) == []
    config = yaml.safe_load(path.read_text())
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"].get("GPU", 0) == 0
    gpu = {k: v for k, v in types.items() if v["resources"].get("GPU", 0) >= 1}
    assert len(gpu) >= 2 and all(v["min_workers"] == 0 for v in gpu.values())
    for v in gpu.values():
        node = v["node_config"]
        spot = node.get("InstanceMarketOptions", {}).get("MarketType") == "spot" or \
            node.get("scheduling", {}).get("provisioningModel") == "SPOT"
        assert spot, "GPU workers should be spot/preemptible"
    assert "RAY_AUTH_MODE=token" in " ".join(config["head_start_ray_commands"])
    assert "--dashboard-port=8265" in " ".join(config["head_start_ray_commands"])


def test_schema_check_names_the_bad_field(tmp_path):
    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    config["available_node_types"]["head"]["min_wrkers"] = 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    (problem,) = check(bad)
    assert "available_node_types.head" in problem and "min_wrkers" in problem


@pytest.mark.parametrize("command", ["up", "down", "status"])
def test_cluster_commands_reject_a_missing_or_invalid_config_before_calling_ray(tmp_path, command):
    res = CliRunner().invoke(amctl.app, ["cluster", command, str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2 and "nope.yaml: no such file" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster_name: x\nprovider: {type: aws, region: us-west-2}\nmax_wrkers: 2\n")
    res = CliRunner().invoke(amctl.app, ["cluster", command, str(bad)])
    assert res.exit_code == 2 and "'max_wrkers' was unexpected" in res.output


def docs(name: str) -> list[dict]:
    return list(yaml.safe_load_all((CLUSTER / "kuberay" / name).read_text()))


def gpu_groups(spec: dict) -> list[dict]:
    groups = spec["workerGroupSpecs"]
    for g in groups:
        assert g["minReplicas"] == 0 and g["maxReplicas"] >= 1
        (container,) = g["template"]["spec"]["containers"]
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    return groups


def check_head(spec: dict) -> None:
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert 8265 in {p["containerPort"] for p in head["ports"]}, "the Jobs API (dashboard) port"
    assert "nvidia.com/gpu" not in head["resources"]["limits"]
    assert spec["authOptions"] == {"mode": "token"} and spec["rayVersion"] == "2.60.0"
    assert spec["enableInTreeAutoscaling"] is True


def test_kuberay_raycluster_manifest():
    cluster, secret = docs("raycluster.yaml")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    check_head(cluster["spec"])
    assert len(gpu_groups(cluster["spec"])) >= 2
    assert secret["kind"] == "Secret"
    assert {"AMCTL_DB_URL", "MLFLOW_TRACKING_URI", "AMCTL_OPTUNA_URL", "AMCTL_RAY_STORAGE"} <= set(secret["stringData"])
    urls = [secret["stringData"][k] for k in ("AMCTL_DB_URL", "AMCTL_OPTUNA_URL")]
    assert len({u.rsplit("/", 1)[1] for u in urls}) == 2, "separate databases (DESIGN.md, Stores)"


def test_kuberay_rayjob_manifest():
    (job,) = docs("rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["spec"]["entrypoint"].startswith("amctl launch sweep ") and job["spec"]["shutdownAfterJobFinishes"] is True
    check_head(job["spec"]["rayClusterSpec"])
    gpu_groups(job["spec"]["rayClusterSpec"])
