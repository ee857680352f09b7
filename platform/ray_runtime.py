"""Ray in this process: an embedded local head started (lean, on loopback, its first worker prestarted) or a
cluster joined, and stopped without making a user wait for Ray's graceful teardown.

Every launch goes through `start_ray`/`ensure_ray` (the CLI, the resident driver, a job on a cluster), so all of
them start or join Ray the same way; tests/test_faults.py checks what an embedded head runs and leaves behind.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager, nullcontext

import ray
from ray.core.generated import common_pb2

from amlab.platform import local_cluster
from amlab.platform.settings import OFFLINE, Settings, check_withheld

_starting: tuple[threading.Event, list[BaseException | None]] | None = None  # a start_ray not yet waited for
_stopping: threading.Thread | None = None  # a stop_ray(wait=False) still shutting Ray down
_prestarted = False  # workers were prestarted for this job, the first trial waits to take one (await_prestarted)
FIRST_WORKER_KEEP_ALIVE_S = 60  # an embedded Ray's prestarted worker outlives Ray's idle limit until the first trial asks


def start_ray(settings: Settings, address: str | None = None, bare_job: bool = False) -> None:
    """Begin starting an embedded local Ray on loopback (or joining `address`) on a thread; `ensure_ray` waits.

    A cold launch's imports and its stores' first opening then run while Ray's processes start (about 1.5 s
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
        # for its own imports and stores (bench/startup.py times a cold launch both ways); one is started, below
        os.environ.update(OFFLINE | {"RAY_preload_python_modules": ",".join(local_cluster.PRELOADED)})
        os.environ.setdefault(local_cluster.PRESTART, "0")
        # "local": a new head, always.  With no address Ray joins the cluster named in /tmp/ray/ray_current_cluster,
        # which `ray start` and Ray's test clusters write and a killed one leaves behind: the launch then waited on a
        # dead GCS for good (seen in CI after a killed test session; tests/test_faults.py leaves such a file)
        options = {"address": "local", "include_dashboard": False}  # the Jobs API serves `--address` clusters only
    # an embedded head: without the processes it has no use for, and with the first trial's worker started as soon
    # as it is up, to import a trial's modules while this process imports and opens its stores (await_prestarted)
    embedded = options["address"] == "local"
    if threading.current_thread() is threading.main_thread():  # Ray sets this only when init runs on the main thread
        signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(signum))
    outcome: list[BaseException | None] = []
    done = threading.Event()

    def start() -> None:
        try:
            with _lean_head() if embedded else nullcontext():
                ray.init(log_to_driver=False, logging_level="ERROR", **options)
            if embedded:  # kept alive: the raylet ends an idle worker after about 1 s (seen: the first trial then
                # asked 1.8 s later and got a new process), and the trial asks once the launch has opened its stores
                prestart_workers(1, FIRST_WORKER_KEEP_ALIVE_S)
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


def prestart_workers(count: int, keep_alive_s: int) -> None:
    """Start `count` idle Ray workers on this node for this job now, each importing a trial's modules
    (local_cluster.PRELOADED): a trial's actor then gets one without waiting for a new process to import torch.
    The raylet's own PrestartWorkers call (Ray has no public one); `keep_alive_s` keeps them beyond Ray's idle limit.
    """
    global _prestarted
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import node_manager_pb2, node_manager_pb2_grpc, runtime_environment_pb2

    node = next(n for n in ray.nodes() if n["Alive"])
    address = f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}"
    stub = node_manager_pb2_grpc.NodeManagerServiceStub(init_grpc_channel(address))
    stub.PrestartWorkers(node_manager_pb2.PrestartWorkersRequest(
        language=common_pb2.PYTHON, job_id=bytes.fromhex(ray.get_runtime_context().get_job_id()),
        runtime_env_info=runtime_environment_pb2.RuntimeEnvInfo(serialized_runtime_env="{}"),
        keep_alive_duration_secs=keep_alive_s, num_workers=count), timeout=10)
    _prestarted = True


def await_prestarted(timeout_s: float = 10.0) -> None:
    """Wait until a worker prestarted for this job is idle in the raylet's pool, before the first trial asks for one.

    A trial's actor asking before then gets a new process of its own (Ray starts one whenever no idle worker is
    there), and the prestarted one only competes with it for the cores.  The raylet lists a worker in its node
    stats once it can call it, which is when it takes it into the pool: about 0.5 s after the process starts,
    before the process imports a trial's modules (the actor then waits for those).
    """
    if not _prestarted:
        return
    from ray._private import internal_api

    node = next(n for n in ray.nodes() if n["Alive"])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = internal_api.node_stats(node["NodeManagerAddress"], node["NodeManagerPort"])
        if any(w.worker_type == common_pb2.WORKER for w in stats.core_workers_stats):
            return
        time.sleep(0.02)


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

    Everything amctl records is closed by then, and Ray's graceful teardown of an embedded instance takes
    0.5-1.2 s more (each of its processes asked to stop and waited for in turn), which a user would wait for at the
    end of every launch.  So the processes it started, and theirs, are killed instead: this process's children
    (the GCS and the raylet) and theirs (the raylet's workers and agents), listed before any is
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
