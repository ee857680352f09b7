"""Cluster definitions: launcher YAMLs pass the schema that ships inside Ray and carry what an amctl cluster needs
(bucket access, the GPU driver wait, the stores on every node); KubeRay manifests run the stores the Ray pods
point at, and no credential is ever on a command line."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from typer.testing import CliRunner

import amctl
from amlab.platform.cluster_config import check
from amlab.platform.settings import redact

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
STORE_VARS = ("AMCTL_DB_URL", "AMCTL_OPTUNA_URL", "MLFLOW_TRACKING_URI", "AMCTL_ARTIFACTS", "AMCTL_RAY_STORAGE")


def launcher(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def gpu_types(config: dict) -> dict[str, dict]:
    return {k: v for k, v in config["available_node_types"].items() if v["resources"].get("GPU", 0) >= 1}


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_config_passes_rays_schema_with_a_cpu_head_and_spot_gpu_workers_from_zero(name):
    path = CLUSTER / name
    assert check(path) == []
    config = launcher(name)
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"].get("GPU", 0) == 0
    gpu = gpu_types(config)
    assert len(gpu) >= 2 and all(v["min_workers"] == 0 for v in gpu.values())
    for v in gpu.values():
        node = v["node_config"]
        spot = node.get("InstanceMarketOptions", {}).get("MarketType") == "spot" or \
            node.get("scheduling", {}).get("provisioningModel") == "SPOT"
        assert spot, "GPU workers should be spot/preemptible"
        assert v["max_workers"] >= 1 and v["resources"]["CPU"] >= 1, "the autoscaler's maximum shape of the type"
    assert sum(v["max_workers"] for v in gpu.values()) <= config["max_workers"]
    assert all({"CPU", "GPU"} <= set(v["resources"]) for v in types.values())
    assert "RAY_AUTH_MODE=token" in " ".join(config["head_start_ray_commands"])
    assert "--dashboard-port=8265" in " ".join(config["head_start_ray_commands"])


def test_every_aws_node_type_has_an_instance_profile():
    for name, node in launcher("aws.yaml")["available_node_types"].items():
        assert node["node_config"]["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::"), name


def test_gcp_gpu_nodes_install_the_driver_and_wait_for_it_and_workers_can_write_gcs():
    config = launcher("gcp.yaml")
    for name, node in gpu_types(config).items():
        items = {i["key"]: i["value"] for i in node["node_config"]["metadata"]["items"]}
        assert items["install-nvidia-driver"] == "True", name
        assert "nvidia-smi" in " ".join(node["initialization_commands"]), name
        (account,) = node["node_config"]["serviceAccounts"]
        assert "https://www.googleapis.com/auth/cloud-platform" in account["scopes"]


def driver_wait(tmp_path: Path, ready_after: int | None, give_up_s: str = "1") -> subprocess.CompletedProcess:
    """gcp.yaml's driver wait, run as Ray runs it on the VM, with an `nvidia-smi` that works from its Nth call
    (never: None); `sleep` is shortened and `timeout` given `give_up_s` instead of the config's minutes."""
    (cmd,) = set(" ".join(v["initialization_commands"]) for v in gpu_types(launcher("gcp.yaml")).values())
    bin_ = tmp_path / "bin"
    bin_.mkdir(parents=True)
    calls = tmp_path / "calls"
    ok = f'[ "$(wc -c < {calls})" -ge {ready_after} ]' if ready_after else "false"
    shims = {"nvidia-smi": f"printf x >> {calls}; {ok}",
             "sleep": f'exec {shutil.which("sleep")} 0.01',
             "timeout": f'shift; exec {shutil.which("timeout")} {give_up_s} "$@"'}
    for name, body in shims.items():
        (bin_ / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_ / name).chmod(0o755)
    calls.write_text("")
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(not shutil.which("timeout"), reason="needs coreutils timeout")
def test_gcp_driver_wait_polls_nvidia_smi_until_the_driver_is_up_and_gives_up_after_its_timeout(tmp_path):
    done = driver_wait(tmp_path / "late", ready_after=3, give_up_s="30")
    assert done.returncode == 0 and (tmp_path / "late" / "calls").read_text() == "xxx"
    never = driver_wait(tmp_path / "never", ready_after=None)
    assert never.returncode != 0 and "no NVIDIA driver" in never.stderr


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_nodes_start_ray_with_the_stores_exported_from_their_own_env_file(name, tmp_path):
    config = launcher(name)
    (remote,) = [r for r in config["file_mounts"] if r.endswith("amctl-stores.env")]
    example = tmp_path / "stores.env"
    shutil.copy(CLUSTER / "stores.env.example", example)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [c for c in config[key] if "ray start" in c]
        # `ray start` replaced by `env`: what Ray (and so every job driver and trial) starts with
        shown = subprocess.run(["bash", "-c", "ray() { env; }; " + start.replace(remote, str(example))],
                               capture_output=True, text=True, timeout=30).stdout
        got = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
        assert got["AMCTL_DB_URL"] == "postgresql://amctl:CHANGE_ME@DBHOST:5432/amctl", key
        assert set(STORE_VARS) <= set(got) and got["AMCTL_ARTIFACTS"].startswith("mlflow-artifacts:/")
        missing = subprocess.run(["bash", "-c", "ray() { echo started; }; " + start.replace(remote, str(tmp_path / "nope"))],
                                 capture_output=True, text=True, timeout=30)
        assert "started" not in missing.stdout, "Ray must not start without the stores"


AMCTL_NEEDS = [
    ("aws.yaml", ["gpu_1x_a10g", "node_config", "IamInstanceProfile"], "gpu_1x_a10g.node_config: add IamInstanceProfile"),
    ("aws.yaml", ["head", "node_config", "IamInstanceProfile"], "head.node_config: add IamInstanceProfile"),
    ("aws.yaml", ["gpu_4x_a10g", "max_workers"], "gpu_4x_a10g: declare max_workers"),
    ("aws.yaml", ["gpu_1x_a10g", "resources", "CPU"], "gpu_1x_a10g.resources: declare CPU"),
    ("gcp.yaml", ["gpu_1x_l4", "initialization_commands"], "gpu_1x_l4.initialization_commands: wait for the NVIDIA driver"),
    ("gcp.yaml", ["gpu_4x_t4", "node_config", "serviceAccounts"], "gpu_4x_t4.node_config: add serviceAccounts"),
]


@pytest.mark.parametrize(("name", "where", "expected"), AMCTL_NEEDS)
def test_check_names_what_an_amctl_cluster_needs_and_ray_does_not_ask_for(tmp_path, name, where, expected):
    config = launcher(name)
    node = config["available_node_types"]
    for key in where[:-1]:
        node = node[key]
    del node[where[-1]]
    bad = tmp_path / name
    bad.write_text(yaml.safe_dump(config))
    (problem,) = check(bad)
    assert problem.startswith(f"{bad}: available_node_types.{expected}")


def test_an_unbounded_driver_wait_is_refused(tmp_path):
    config = launcher("gcp.yaml")
    config["available_node_types"]["gpu_1x_l4"]["initialization_commands"] = ["until nvidia-smi; do sleep 10; done"]
    bad = tmp_path / "gcp.yaml"
    bad.write_text(yaml.safe_dump(config))
    (problem,) = check(bad)
    assert "gpu_1x_l4.initialization_commands: wait for the NVIDIA driver" in problem


def test_schema_check_names_the_bad_field(tmp_path):
    config = launcher("aws.yaml")
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
    config = launcher("aws.yaml")
    del config["available_node_types"]["gpu_1x_a10g"]["node_config"]["IamInstanceProfile"]
    bad.write_text(yaml.safe_dump(config))
    res = CliRunner().invoke(amctl.app, ["cluster", command, str(bad)])
    assert res.exit_code == 2 and "add IamInstanceProfile" in res.output


# -- KubeRay ---------------------------------------------------------------------------------------

def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((CLUSTER / "kuberay" / name).read_text()) if d]


def objects() -> dict[tuple[str, str], dict]:
    """Every manifest in cluster/kuberay, by (kind, name)."""
    found = [d for path in sorted((CLUSTER / "kuberay").glob("*.yaml")) for d in docs(path.name)]
    index = {(d["kind"], d["metadata"]["name"]): d for d in found}
    assert len(index) == len(found), "two manifests with one kind and name"
    return index


def containers(tree) -> list[dict]:
    """Every container and init container anywhere in a manifest (pod templates nest differently per kind)."""
    if isinstance(tree, list):
        return [c for item in tree for c in containers(item)]
    if not isinstance(tree, dict):
        return []
    own = [c for key in ("containers", "initContainers") for c in tree.get(key, [])]
    return own + [c for key, v in tree.items() if key not in ("containers", "initContainers") for c in containers(v)]


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


def check_ray_pods_read_the_stores_secret(manifest: dict) -> None:
    for c in containers(manifest):
        assert {"secretRef": {"name": "amctl-stores"}} in c["envFrom"], c["name"]
    assert not any(v in str(manifest["spec"].get("runtimeEnvYAML", "")) for v in STORE_VARS), "never a runtime env"


def test_kuberay_raycluster_manifest():
    (cluster,) = docs("raycluster.yaml")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    check_head(cluster["spec"])
    assert len(gpu_groups(cluster["spec"])) >= 2
    check_ray_pods_read_the_stores_secret(cluster)


def test_kuberay_rayjob_manifest():
    (job,) = docs("rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["spec"]["entrypoint"].startswith("amctl launch sweep ") and job["spec"]["shutdownAfterJobFinishes"] is True
    check_head(job["spec"]["rayClusterSpec"])
    gpu_groups(job["spec"]["rayClusterSpec"])
    check_ray_pods_read_the_stores_secret(job)


def served(objs: dict, url: str) -> tuple[dict, dict]:
    """The Service a store URL names (by host and port) and the one container behind it (by selector and port)."""
    u = urlsplit(url)
    service = objs[("Service", u.hostname)]
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == u.port]
    (workload,) = [d for d in objs.values() if d["kind"] in ("Deployment", "StatefulSet")
                   and service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    assert port["targetPort"] in {p["containerPort"] for p in container["ports"]}, url
    return workload, container


def secret_env(objs: dict, container: dict, name: str) -> str:
    (ref,) = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if e["name"] == name]
    return objs[("Secret", ref["name"])]["stringData"][ref["key"]]


def check_database(objs: dict, url: str) -> None:
    """A postgresql:// URL names the postgres Service, its user and password, and a database the server creates."""
    workload, pg = served(objs, url)
    u = urlsplit(url)
    env = {e["name"]: e.get("value") for e in pg["env"]}
    assert pg["image"].startswith("postgres:") and u.scheme == "postgresql" and u.username == env["POSTGRES_USER"]
    assert u.password == secret_env(objs, pg, "POSTGRES_PASSWORD")
    (init,) = [v["configMap"]["name"] for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == "init"]
    assert {"name": "init", "mountPath": "/docker-entrypoint-initdb.d", "readOnly": True} in pg["volumeMounts"]
    created = {env["POSTGRES_DB"]} | {m for sql in objs[("ConfigMap", init)]["data"].values()
                                      for m in re.findall(r"CREATE DATABASE (\w+);", sql)}
    assert u.path.lstrip("/") in created, url


def test_kuberay_stores_run_the_postgres_and_mlflow_servers_the_secret_points_at():
    from mlflow.cli import server
    from mlflow.server.security_utils import is_allowed_host_header

    objs = objects()
    stores = objs[("Secret", "amctl-stores")]["stringData"]
    assert set(STORE_VARS) <= set(stores)
    assert len({urlsplit(stores[k]).path for k in ("AMCTL_DB_URL", "AMCTL_OPTUNA_URL")}) == 2, "separate databases"
    for key in ("AMCTL_DB_URL", "AMCTL_OPTUNA_URL"):
        check_database(objs, stores[key])

    tracking = urlsplit(stores["MLFLOW_TRACKING_URI"])
    _, mlflow = served(objs, stores["MLFLOW_TRACKING_URI"])
    line = mlflow["command"] + mlflow["args"]
    assert tracking.scheme == "http" and line[:2] == ["mlflow", "server"] and "--serve-artifacts" in line
    assert re.fullmatch(r"(s3|gs)://[^/]+/.+", line[line.index("--artifacts-destination") + 1])
    assert line[line.index("--port") + 1] == str(tracking.port) and line[line.index("--host") + 1] == "0.0.0.0"
    assert stores["AMCTL_ARTIFACTS"].startswith("mlflow-artifacts:/"), "artifacts through the server's proxy"
    # the backend comes from the environment variable the installed `mlflow server` reads it from
    (backend,) = [p for p in server.params if p.name == "backend_store_uri"]
    assert "--backend-store-uri" not in line
    check_database(objs, secret_env(objs, mlflow, backend.envvar))
    assert urlsplit(secret_env(objs, mlflow, backend.envvar)).path == "/mlflow"
    # MLflow answers only the Host headers it allows: the Ray pods' and a port-forward's
    allowed = {e["name"]: e.get("value") for e in mlflow["env"]}["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    for host in (tracking.netloc, f"mlflow.amctl.svc.cluster.local:{tracking.port}", "localhost:5000", "127.0.0.1:5000"):
        assert is_allowed_host_header(allowed, host), host


def credentials_on_command_lines(objs: dict) -> list[str]:
    """The manifests with a credential on a command line (container command/args, a RayJob's entrypoint) or in a
    literal env value: a URL with a password, or any password or credential-bearing URL of the Secrets."""
    secrets = {v for (kind, _), d in objs.items() if kind == "Secret" for k, v in d.get("stringData", {}).items()
               if redact(v) != v or "PASSWORD" in k}
    found = []
    for (kind, name), d in objs.items():
        lines = [" ".join(map(str, c.get("command", []) + c.get("args", []))) for c in containers(d)]
        lines += [d["spec"]["entrypoint"]] if kind == "RayJob" else []
        lines += [str(e["value"]) for c in containers(d) for e in c.get("env", []) if "value" in e]
        if any(re.search(r"://[^/\s@]+:[^/\s@]+@", line) or any(s in line for s in secrets) for line in lines):
            found.append(f"{kind}/{name}")
    return found


def test_no_kuberay_manifest_puts_a_password_on_a_command_line():
    objs = objects()
    assert credentials_on_command_lines(objs) == []
    leaky = copy.deepcopy(objs)
    mlflow = leaky[("Deployment", "amctl-mlflow")]["spec"]["template"]["spec"]["containers"][0]
    mlflow["args"] += ["--backend-store-uri", objs[("Secret", "amctl-postgres")]["stringData"]["MLFLOW_BACKEND_STORE_URI"]]
    assert credentials_on_command_lines(leaky) == ["Deployment/amctl-mlflow"]
    leaky = copy.deepcopy(objs)
    pg = leaky[("StatefulSet", "amctl-postgres")]["spec"]["template"]["spec"]["containers"][0]
    pg["env"] = [{"name": "POSTGRES_PASSWORD", "value": "CHANGE_ME"}]  # a literal instead of the Secret's
    assert credentials_on_command_lines(leaky) == ["StatefulSet/amctl-postgres"]
