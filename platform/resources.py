"""ONE resource policy: what a trial requests from Ray, how its work is placed, and how many trials fit at once.

A single run and a sweep go through `plan`, so a run and a one-cell sweep
get the same placement.  One-worker trials hold their CPUs (and GPU)
themselves; a DDP trial is a tiny driver (`DRIVER_CPU`) that starts a
TorchTrainer whose workers hold the rest.  Concurrency never exceeds what
the nodes can hold together, so trials never deadlock waiting for each
other's resources.
"""

from __future__ import annotations

import gc
import math
import os
import signal
import sys
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import ray

from amlab.platform import local_cluster
from amlab.platform.errors import ResourceError
from amlab.platform.settings import OFFLINE, Settings, check_withheld
from amlab.platform.sweep_spec import ResourcesSpec
from amlab.platform.trial import Placement

DRIVER_CPU = 0.01  # a Tune trial that only drives a TorchTrainer; it cannot ask for 0
_starting: tuple[threading.Event, list[BaseException | None]] | None = None  # a start_ray not yet waited for
_stopping: threading.Thread | None = None  # a stop_ray(wait=False) still shutting Ray down


def start_ray(settings: Settings, address: str | None = None, bare_job: bool = False) -> None:
    """Begin starting an embedded local Ray on loopback (or joining `address`) on a thread; `ensure_ray` waits.

    A cold launch's imports and its stores' first opening then run while Ray's processes start (about 4 s
    on 2 cores).  The thread lives as long as the process: Ray's head processes die with the thread that
    spawned them (PR_SET_PDEATHSIG), so they would be killed the moment it returned.

    Workers never open the stores: what a trial has for MLflow rides its reports to this driver
    (platform/outbox.py), so neither store URLs nor credentials travel to a cluster's nodes.  Joined clusters
    get only the offline switches in the job's runtime env; `bare_job`: no runtime env at all, for the local
    cluster's resident driver (platform/resident.py), whose head was started from its own environment.
    """
    global _starting
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the progress display is ours; Tune's tables would interleave
    _stopped()
    if _starting is not None or ray.is_initialized():
        return
    check_withheld()
    if not (address or os.environ.get("RAY_ADDRESS")) and (head := local_cluster.running(settings)):
        os.environ.update(head["env"])  # `amctl cluster up`'s warm local head: joined like a cluster
        local_only()
        address = head["address"]
    if address or os.environ.get("RAY_ADDRESS"):
        options = {"address": address} | ({} if bare_job else {"runtime_env": {"env_vars": OFFLINE}})
    else:
        local_only()
        # its processes inherit: every worker imports a trial's modules first, and the raylet does not start one worker
        # per CPU when this driver registers, as it would by default, to import on cores that this process still needs
        # for its own imports and stores (bench/startup.py times a cold launch both ways)
        os.environ.update(OFFLINE | {"RAY_preload_python_modules": ",".join(local_cluster.PRELOADED)})
        os.environ.setdefault(local_cluster.PRESTART, "0")
        options = {"include_dashboard": False}  # the Jobs API serves `--address` clusters, never this one
    lean = nullcontext() if "address" in options else _lean_head()
    if threading.current_thread() is threading.main_thread():  # Ray sets this only when init runs on the main thread
        signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(signum))
    outcome: list[BaseException | None] = []
    done = threading.Event()

    def start() -> None:
        try:
            with lean:
                ray.init(log_to_driver=False, logging_level="ERROR", **options)
            outcome.append(None)
        except BaseException as e:  # handed to ensure_ray, raised on the main thread
            outcome.append(e)
        done.set()
        threading.Event().wait()  # see above: the head's processes live as long as this thread

    threading.Thread(target=start, name="amctl-ray-start", daemon=True).start()
    _starting = (done, outcome)


def ensure_ray(settings: Settings, address: str | None = None, bare_job: bool = False) -> None:
    """Ray started (or joined) as `start_ray` does; waits for a start already begun, and raises its error."""
    global _starting
    start_ray(settings, address, bare_job)
    if _starting is None:
        return
    done, outcome = _starting
    done.wait()
    _starting = None
    if outcome[0] is not None:
        raise outcome[0]


def stop_ray(wait: bool = True) -> None:
    """Shut Ray down if this process started or joined it, after any start still in flight has ended.

    `wait=False` shuts it down on a thread, for a process whose launch is over but whose records and report are
    still being closed (about 1.4 s of Ray's teardown then overlaps them); the next start_ray or stop_ray waits.
    """
    global _starting, _stopping
    if _starting is not None:
        _starting[0].wait()
        _starting = None
    if not wait:
        if _stopping is None and ray.is_initialized():
            # no garbage collection here while Ray shuts down on the thread: a cycle holding a Ray object, collected
            # mid-shutdown, calls into the core worker being torn down, and Ray ends the process ("The core worker
            # has already been shutdown", exit 1) before its records are closed; the thread turns it back on
            collecting = gc.isenabled()
            gc.disable()

            def shutdown() -> None:
                try:
                    ray.shutdown()
                finally:
                    if collecting:
                        gc.enable()

            _stopping = threading.Thread(target=shutdown, name="amctl-ray-stop", daemon=True)
            _stopping.start()
        return
    _stopped()
    if ray.is_initialized():
        ray.shutdown()


def stop_ray_at_exit() -> None:
    """Ray gone before this process exits, without waiting out a graceful shutdown still in flight.

    Everything amctl records is closed by then, and Ray's graceful teardown of an embedded instance takes about
    1.2 s more (each of its processes asked to stop and waited for in turn), which a user would wait for at the
    end of every launch.  So the processes it started, and theirs, are killed instead: this process's children
    (the GCS, the raylet, their monitors) and theirs (the raylet's workers and agents), listed before any is
    killed, since the agents would otherwise outlive a killed raylet by a minute.  A joined cluster's driver
    has none of them: its shutdown only disconnects, and the job ends with this process.
    """
    import psutil

    if _stopping is None or not _stopping.is_alive():
        stop_ray()
        return
    for p in psutil.Process().children(recursive=True):
        try:
            p.kill()
        except psutil.Error:  # gone since listed
            pass


def _stopped() -> None:
    """Wait for a stop_ray(wait=False) still in progress."""
    global _stopping
    if _stopping is not None:
        _stopping.join()
        _stopping = None


@contextmanager
def _lean_head():
    """`ray.init` starting an embedded head without the three processes it has no use for, about 1 s of a cold launch.

    Ray 2.60 starts them whatever `ray.init` is given, and has no public switch for them:
      - the dashboard head, which with `include_dashboard=False` serves only usage statistics (off: settings.OFFLINE),
        and which `ray.init` waits for until it has registered (0.6-1.4 s here);
      - the autoscaler's monitor: one fixed node has nothing to scale (`ray start --no-monitor`);
      - the log monitor, which ships workers' output to drivers, and this one is started with `log_to_driver=False`
        (`ray start --include-log-monitor=false`).
    Both monitors use about 0.4 CPU s each while the launch's imports need the cores.  The raylet, its agents
    (metrics for dashboards/grafana, runtime environments) and the GCS start as always.  Patched for the duration
    of `ray.init` only; tests/test_faults.py checks which processes an embedded Ray runs.
    """
    from ray._private.node import Node
    from ray._private.parameter import RayParams

    init, api_server = RayParams.__init__, Node.start_api_server

    def params(self: RayParams, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs | {"no_monitor": True, "include_log_monitor": False})

    RayParams.__init__, Node.start_api_server = params, lambda self, **_: None
    try:
        yield
    finally:
        RayParams.__init__, Node.start_api_server = init, api_server


def local_only() -> None:
    """Make the embedded Ray this machine's alone: every port on 127.0.0.1 (tests/test_faults.py checks).

    `ray.init(_node_ip_address="127.0.0.1")` is turned back into the network address; Ray's own local-only mode
    (its default on macOS and Windows) is what binds loopback: set for the processes it starts (environment) and
    for this one, whose constant was read when `ray` was imported.
    """
    from ray._private import ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def check_local_devices(gpus_per_worker: float, address: str | None) -> None:
    """Before anything is recorded: an embedded local Ray cannot give GPUs this machine does not have.

    (Waiting for them would hang forever; a cluster's own shape is checked by `plan` once joined.)
    """
    joining = address or os.environ.get("RAY_ADDRESS") or ray.is_initialized()
    if gpus_per_worker and not joining:
        import torch

        if not torch.cuda.is_available():
            raise ResourceError("train.device is 'cuda' (or resources.gpus_per_worker > 0) but this machine has no "
                                "CUDA device; use train.device=cpu or auto, or give --address of a GPU cluster")


@dataclass(frozen=True)
class Plan:
    request: dict[str, float]  # what each Tune trial asks for (tune.with_resources)
    placement: Placement  # threads and per-worker resources inside the trial
    concurrency: int
    bundles: list[dict[str, float]]  # one trial's resources as Ray bundles (its driver, then each worker)


BOOTSTRAP = "~/ray_bootstrap_config.yaml"  # what `ray up` leaves on the head: the cluster YAML, resources filled in


@dataclass(frozen=True)
class Shape:
    """The nodes a cluster can hold at once: the live ones, or, under an autoscaler, its largest shape."""

    nodes: list[dict[str, float]]
    autoscaled: bool = False


def _autoscaler_config() -> dict | None:
    """The autoscaler's cluster YAML: AMCTL_CLUSTER_CONFIG, else the head's bootstrap file; None on a fixed cluster."""
    import yaml

    for path in (os.environ.get("AMCTL_CLUSTER_CONFIG"), os.path.expanduser(BOOTSTRAP)):
        if path and os.path.exists(path):
            with open(path) as f:
                config = yaml.safe_load(f) or {}
            if config.get("available_node_types"):
                return config
    return None


def cluster_shape() -> Shape:
    """What planning reads: a cluster scaled to zero workers still fits a GPU trial if a node type it may add has one."""
    return shape_of(_autoscaler_config(), [n["Resources"] for n in ray.nodes() if n["Alive"]])


def shape_of(config: dict | None, alive: list[dict[str, float]]) -> Shape:
    """Under an autoscaler the largest cluster is the head plus every worker type at its max_workers (the total
    capped by the global max_workers, GPU types first); a fixed cluster is what is alive now."""
    if config is None:
        return Shape(alive)
    head_type, types = config.get("head_node_type"), config["available_node_types"]
    head = [n for n in alive if "node:__internal_head__" in n] or [types.get(head_type, {}).get("resources", {})]
    budget = config.get("max_workers", 2**31)
    workers = [dict(t.get("resources", {})) for name, t in types.items() if name != head_type
               for _ in range(int(t.get("max_workers", budget)))]
    workers.sort(key=lambda n: -float(n.get("GPU", 0)))
    return Shape(head + workers[:budget], autoscaled=True)


def request(plan: Plan | None, shape: Shape) -> None:
    """Ask the autoscaler for the nodes the planned concurrency needs at once (pending trials alone ask one at a
    time); `request(None, shape)` withdraws the request, which otherwise outlives the driver."""
    if not shape.autoscaled:
        return
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[] if plan is None else plan.bundles * plan.concurrency)


def plan(r: ResourcesSpec, total_trials: int, shape: Shape) -> Plan:
    """The placement of every trial of a sweep on the cluster's largest shape (ResourceError if it can never fit)."""
    nodes = shape.nodes
    cpus = sum(float(n.get("CPU", 0)) for n in nodes) or 1.0
    gpus = sum(float(n.get("GPU", 0)) for n in nodes)
    node_cpus = max((float(n.get("CPU", 0)) for n in nodes), default=1.0) or 1.0
    workers = r.workers_per_trial
    largest = "at its largest " if shape.autoscaled else ""
    if r.gpus_per_worker and r.gpus_per_worker * workers > gpus:
        raise ResourceError(f"resources: a trial needs {r.gpus_per_worker * workers:g} GPUs ({workers} worker(s) × "
                            f"gpus_per_worker={r.gpus_per_worker:g}); the cluster {largest}has {gpus:g}")
    node_gpus = max((float(n.get("GPU", 0)) for n in nodes), default=0.0)
    if r.gpus_per_worker > node_gpus:
        raise ResourceError(f"resources.gpus_per_worker={r.gpus_per_worker:g}: no node of the cluster {largest}has "
                            f"more than {node_gpus:g} GPUs")
    if workers == 1:
        cpw = min(r.cpus_per_worker, node_cpus)
        request, per_trial = {"cpu": cpw, "gpu": r.gpus_per_worker}, cpw
    else:
        cpw = min(r.cpus_per_worker, math.floor((cpus - DRIVER_CPU) / workers * 100) / 100)
        if cpw <= 0:
            raise ResourceError(f"resources.workers_per_trial={workers} does not fit on {cpus:g} CPUs")
        request, per_trial = {"cpu": DRIVER_CPU}, DRIVER_CPU + cpw * workers
    fits = math.floor(cpus / per_trial + 1e-9)
    if r.gpus_per_worker:
        fits = min(fits, math.floor(gpus / (r.gpus_per_worker * workers) + 1e-9))
    concurrency = max(1, min(fits, r.max_concurrent or fits, total_trials))
    placement = Placement(threads=max(1, int(cpw)), cpus_per_worker=cpw, gpus_per_worker=r.gpus_per_worker,
                          max_failures=r.max_failures)
    worker = {"CPU": cpw, **({"GPU": r.gpus_per_worker} if r.gpus_per_worker else {})}
    bundles = [worker] if workers == 1 else [{"CPU": DRIVER_CPU}] + [worker] * workers
    return Plan(request, placement, concurrency, bundles)
