"""Scale-out on clusters built here with Ray's own tools: planning from the largest shape an autoscaler may
reach, scaling from zero GPU workers and back, and a worker node lost mid-sweep.

The cluster tests start their own Ray (marked `embedded`: they run before the session's cluster exists);
each sweep is driven by the CLI in a subprocess, as a user's `amctl launch sweep --address` would be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import command_line
from mlflow.tracking import MlflowClient

from amlab.platform.errors import ResourceError
from amlab.platform.resources import Shape, plan, shape_of
from amlab.platform.status import Status
from amlab.platform.store import Store, Trial
from amlab.platform.sweep_spec import ResourcesSpec

REPO = Path(__file__).resolve().parents[1]
HEAD = {"CPU": 1.0, "node:__internal_head__": 1.0}
GPU_NODE = {"CPU": 1.0, "GPU": 1.0}


# -- planning from the largest shape (no Ray) ------------------------------------------------------

def test_a_cluster_scaled_to_zero_plans_from_the_node_types_it_may_add():
    config = {"head_node_type": "head", "max_workers": 3,
              "available_node_types": {"head": {"resources": {"CPU": 1, "GPU": 0}, "max_workers": 0},
                                       "gpu": {"resources": {"CPU": 1, "GPU": 1}, "min_workers": 0, "max_workers": 2},
                                       "cpu": {"resources": {"CPU": 8}, "min_workers": 0, "max_workers": 4}}}
    shape = shape_of(config, [HEAD])  # only the head is alive: 0 GPUs now
    # the head as it is, both GPU nodes, then CPU nodes up to the global max_workers (3 workers in all)
    assert shape.autoscaled and shape.nodes == [HEAD, GPU_NODE, GPU_NODE, {"CPU": 8}]
    p = plan(ResourcesSpec(gpus_per_worker=1), total_trials=10, shape=shape)
    assert p.concurrency == 2 and p.request == {"cpu": 1, "gpu": 1} and p.bundles == [{"CPU": 1, "GPU": 1}]
    ddp = plan(ResourcesSpec(workers_per_trial=2, gpus_per_worker=1), total_trials=10, shape=shape)
    assert ddp.concurrency == 1 and ddp.bundles == [{"CPU": 0.01}, {"CPU": 1, "GPU": 1}, {"CPU": 1, "GPU": 1}]
    # the same cluster read as fixed (no autoscaler): what is alive now cannot hold a GPU trial
    with pytest.raises(ResourceError, match=r"needs 1 GPUs .*the cluster has 0"):
        plan(ResourcesSpec(gpus_per_worker=1), total_trials=10, shape=shape_of(None, [HEAD]))


def test_a_trial_no_node_type_can_hold_fails_before_anything_runs():
    shape = Shape([HEAD, GPU_NODE, GPU_NODE], autoscaled=True)
    with pytest.raises(ResourceError, match=r"gpus_per_worker=2: no node of the cluster at its largest has more than 1 GPUs"):
        plan(ResourcesSpec(gpus_per_worker=2), total_trials=1, shape=shape)
    with pytest.raises(ResourceError, match=r"needs 3 GPUs .*at its largest has 2"):
        plan(ResourcesSpec(workers_per_trial=3, gpus_per_worker=1), total_trials=1, shape=shape)


def test_the_shipped_cloud_clusters_fit_a_gpu_sweep_at_their_largest():
    for name in ("aws", "gcp"):
        config = yaml.safe_load((REPO / "cluster" / f"{name}.yaml").read_text())
        shape = shape_of(config, [{"CPU": 0.0, "node:__internal_head__": 1.0}])
        assert sum(n.get("GPU", 0) for n in shape.nodes) == 16, name  # 8 × 1 GPU + 2 × 4 GPUs, within max_workers 16
        assert plan(ResourcesSpec(gpus_per_worker=1), 100, shape).concurrency == 16
        assert plan(ResourcesSpec(workers_per_trial=4, gpus_per_worker=1), 100, shape).concurrency == 4


def test_a_single_run_takes_a_whole_node_and_a_sweep_trial_one_cpu():
    """A run's one trial gets the largest node's CPUs as torch threads (a plain script's default); a sweep's trials
    take one CPU each, so a 2-core machine runs two at once."""
    from amlab.platform.api import plan as plan_launch
    from amlab.platform.status import Kind

    shape = Shape([{"CPU": 2.0}, {"CPU": 8.0}])
    run = plan_launch(Kind.RUN, {"mechanism": {"name": "lstm"}, "task": {"name": "copy"}})
    whole = plan(run.resources, total_trials=1, shape=shape)
    assert (whole.request, whole.placement.threads, whole.concurrency) == ({"cpu": 8.0, "gpu": 0}, 8, 1)
    sweep = plan(ResourcesSpec(), total_trials=20, shape=shape)
    assert (sweep.request["cpu"], sweep.placement.threads, sweep.concurrency) == (1, 1, 10)


# -- real clusters ---------------------------------------------------------------------------------

def sweep_spec(name: str, steps: int, **resources) -> dict:
    return {"name": name, "mechanisms": {"lstm": {"d_model": 16}}, "tasks": {"copy": {"max_len": 4, "test_lens": [4, 8]}},
            "seeds": [0, 1], "train": {"steps": steps, "batch_size": 8, "eval_every": 100, "log_every": 100,
                                      "eval_batches": 1, "device": "cpu"},
            "search": {"trials": 2, "scheduler": "fifo"}, "resources": resources}


def launch(tmp_path: Path, spec: dict, address: str, **env: str) -> subprocess.Popen:
    (tmp_path / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AMCTL_", "MLFLOW_TRACKING"))}
    cmd = [sys.executable, str(REPO / "amctl.py"), "launch", "sweep", str(tmp_path / f"{spec['name']}.yaml"),
           "--address", address, "--json"]
    return subprocess.Popen(cmd, env=clean | {"AMCTL_HOME": str(tmp_path / "home"), **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def rows(home: Path, name: str) -> list[Trial]:
    if not (home / "amctl.db").exists():  # the driver has not opened its store yet
        return []
    store = Store(f"sqlite:///{home / 'amctl.db'}")
    with store.session() as s:
        return [t for t in s.query(Trial).all() if t.cell.sweep.name == name]


def check_finished(home: Path, name: str, steps: int) -> list[Trial]:
    """Every cell valued, every trial FINISHED at full length, each MLflow history logged once, nothing RUNNING."""
    store = Store(f"sqlite:///{home / 'amctl.db'}")
    with store.session() as s:
        sweep = store.sweep(s, name)
        assert sweep.status == Status.FINISHED and all(c.status == Status.FINISHED and c.value is not None
                                                       for c in sweep.cells)
    trials = rows(home, name)
    assert len(trials) == 4 and all(t.status == Status.FINISHED and t.steps_done == steps for t in trials)
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    for t in trials:
        assert client.get_run(t.mlflow_run_id).info.status == "FINISHED"
        logged = [m.step for m in client.get_metric_history(t.mlflow_run_id, "train/loss")]
        assert logged == list(range(100, steps + 1, 100)), f"{t.mlflow_run_id}: a step logged twice or lost"
    return trials


def alive_nodes(address: str) -> list[dict]:
    """The cluster's live nodes, asked from a separate driver (this test process never joins a cluster)."""
    code = (f"import json, ray; ray.init(address={address!r}, logging_level='ERROR'); "
            "print('NODES', json.dumps([n['Resources'] for n in ray.nodes() if n['Alive']]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # Ray's driver may print the autoscaler's events ("(autoscaler +0s) Resized to 1 CPUs.") around it
    [line] = [x for x in done.stdout.splitlines() if x.startswith("NODES ")]
    return json.loads(line.removeprefix("NODES "))


@pytest.mark.embedded
def test_a_gpu_sweep_scales_a_cluster_up_from_zero_workers_and_back(tmp_path, monkeypatch):
    """Ray's fake multi-node autoscaler: a head with no GPU and a GPU worker type at min_workers 0."""
    from ray.cluster_utils import AutoscalingCluster

    config = {
        "cluster_name": "amctl-fake", "max_workers": 2, "upscaling_speed": 1.0, "idle_timeout_minutes": 0.1,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True},
        "auth": {"ssh_user": "ubuntu"}, "docker": {}, "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 1, "GPU": 0}, "node_config": {}, "max_workers": 0},
            "gpu_node": {"resources": dict(GPU_NODE), "node_config": {}, "min_workers": 0, "max_workers": 2}},
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [],
        "rsync_filter": [], "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }

    class Fake(AutoscalingCluster):  # Ray's wheel lacks the example YAML its own class reads: give the whole config
        def _generate_config(self, *args, **kwargs):
            return config

    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # the `ray` CLI
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(config))  # what `ray up` leaves on a head
    cluster = Fake(head_resources={"CPU": 1, "GPU": 0}, worker_node_types={})
    cluster.start()
    try:
        address = "auto"
        assert [n.get("GPU", 0) for n in alive_nodes(address)] == [0]  # scaled to zero: no GPU anywhere
        env = {"AMCTL_CLUSTER_CONFIG": str(tmp_path / "cluster.yaml")}

        # a trial no node type can hold is refused before any trial exists, and nothing is left RUNNING
        bad = launch(tmp_path, sweep_spec("too-big", 200, gpus_per_worker=2), address, **env)
        out, err = bad.communicate(timeout=300)
        assert bad.returncode == 2 and "gpus_per_worker=2: no node of the cluster at its largest" in err, err[-2000:]
        store = Store(f"sqlite:///{tmp_path / 'home' / 'amctl.db'}")
        with store.session() as s:
            assert store.sweep(s, "too-big").status != Status.RUNNING and not rows(tmp_path / "home", "too-big")

        run = launch(tmp_path, sweep_spec("from-zero", 600, gpus_per_worker=1), address, **env)
        out, err = run.communicate(timeout=900)
        assert run.returncode == 0, err[-3000:]
        assert json.loads(out[out.index("{"):])["concurrency"] == 2  # planned on both GPU nodes the autoscaler may add
        check_finished(tmp_path / "home", "from-zero", 600)  # every trial ran on a GPU node the autoscaler started

        deadline = time.time() + 180  # idle nodes go after idle_timeout_minutes (6 s) and the monitor's next pass
        while len(nodes := alive_nodes(address)) > 1 and time.time() < deadline:
            time.sleep(5)
        assert [n.get("GPU", 0) for n in nodes] == [0], "the GPU nodes were not scaled back down"
    finally:
        cluster.shutdown()


@pytest.mark.embedded
def test_a_worker_node_lost_mid_sweep_is_survived(tmp_path):
    """Two 1-CPU worker nodes under a head that runs no trial; the node of a running trial dies (its raylet killed
    by PID): the trials it held are retried elsewhere from their checkpoints, and the sweep finishes whole."""
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 150 * 1024**2})
    workers = [cluster.add_node(num_cpus=1, object_store_memory=150 * 1024**2) for _ in range(2)]
    try:
        run = launch(tmp_path, sweep_spec("node-lost", 1500, max_failures=2), cluster.address)
        deadline, killed = time.time() + 300, None
        while time.time() < deadline and killed is None and run.poll() is None:
            training = [t for t in rows(tmp_path / "home", "node-lost") if t.status == Status.RUNNING and t.steps_done >= 300]
            for node in workers if training else []:
                raylet = psutil.Process(node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid)
                started = raylet.children(recursive=True)
                if any("ImplicitFunc" in command_line(p) for p in started):
                    for p in (raylet, *started):  # the machine is gone: its raylet and every process it started
                        p.kill()
                    killed = node
                    break
            time.sleep(0.2)
        assert killed is not None, "no trial got past step 300 on a worker node"
        out, err = run.communicate(timeout=900)
        assert run.returncode == 0, err[-3000:]
        trials = check_finished(tmp_path / "home", "node-lost", 1500)
        retried = [t for t in trials if (t.error or "").startswith("attempt 1 failed, retried:")]
        assert retried, "no trial records the attempt it lost with the node"
        client = MlflowClient(f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
        assert all(client.get_run(t.mlflow_run_id).data.tags.get("amctl.retries") == "1" for t in retried)
        assert len(client.search_runs([client.get_experiment_by_name("node-lost").experiment_id])) == 1 + 1 + 4
    finally:
        cluster.shutdown()
