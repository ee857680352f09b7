"""ONE resource policy: what a trial requests from Ray, how its work is placed, and how many trials fit at once.

A single run and a sweep go through `plan`, so a run and a one-cell sweep
get the same placement.  One-worker trials hold their CPUs (and GPU)
themselves; a DDP trial is a tiny driver (`DRIVER_CPU`) that starts a
TorchTrainer whose workers hold the rest.  Concurrency never exceeds what
the nodes can hold together, so trials never deadlock waiting for each
other's resources.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import ray

from amlab.platform.errors import ResourceError
from amlab.platform.sweep_spec import ResourcesSpec
from amlab.platform.trial import Placement

DRIVER_CPU = 0.01  # a Tune trial that only drives a TorchTrainer; it cannot ask for 0


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
