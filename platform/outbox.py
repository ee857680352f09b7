"""What a trial has for MLflow, carried to the driver inside its own Tune reports: trial workers never import MLflow.

MLflow and its SQL store cost every worker about 85 MiB of private memory and a second of imports (bench/memory.py
prints the layers), for a few writes per evaluation; the driver holds both anyway and writes them
(`tracking.Deliveries`).  A trial puts metrics, tags and samples of its machine here; each report it makes
takes what has gathered (`attach`), so MLflow is as current as Tune.  Its last report names the folder on Ray's
storage (every node reaches it) that holds its final checkpoint, its introspection dumps and its model.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

KEY = "amctl/mlflow"  # a report's entry with the outbox's items; the driver takes it out before Tune keeps the result
FINAL = "amctl/final"  # a report's entry naming its trial's final artifacts on storage
SYSTEM_INTERVAL_S = 2.0  # trials last minutes: MLflow's default 10 s would draw a handful of points
FINAL_CHECKPOINT, FINAL_DUMPS, FINAL_MODEL = "checkpoint", "dumps", "model.pt"  # a final folder's parts
SYSTEM = "system/"  # node samples: a series of their own (not deduplicated by training step on a resume)


@dataclass(frozen=True)
class Item:
    """One MLflow write: a metric (with its step and time) or a tag (step and time unused)."""

    key: str
    value: float | str
    timestamp_ms: int = 0
    step: int = 0

    @property
    def is_tag(self) -> bool:
        return isinstance(self.value, str)


class Outbox:
    """Items gathered since the last report; the training loop and the sampler thread both add to it."""

    def __init__(self):
        self._items: list[Item] = []
        self._lock = threading.Lock()

    def metrics(self, metrics: dict[str, float], step: int, timestamp_ms: int) -> None:
        with self._lock:
            self._items += [Item(k, float(v), timestamp_ms, step) for k, v in metrics.items()]

    def tags(self, **tags: str) -> None:
        with self._lock:
            self._items += [Item(k, str(v)) for k, v in tags.items()]

    def attach(self, report: dict) -> dict:
        """`report` with everything gathered since the last one (taken from the outbox)."""
        with self._lock:
            items, self._items = self._items, []
        return {**report, KEY: items} if items else report


class SystemSampler:
    """Samples this machine into an outbox every SYSTEM_INTERVAL_S while a trial trains, under MLflow's own
    system-metric names (`system/<node>/cpu_utilization_percentage`, ...): values are the node's, not the trial's."""

    def __init__(self, outbox: Outbox, node: str | None, disk: str = "/"):
        self.outbox, self.prefix, self.disk = outbox, SYSTEM + (f"{node}/" if node else ""), disk
        self.step, self._stop = 0, threading.Event()  # the training step the loop has reached (the samples' x)
        self._lock, self._last_ms = threading.Lock(), 0
        self._thread = threading.Thread(target=self._run, name="amctl-system-metrics", daemon=True)
        self._net = psutil.net_io_counters()

    def __enter__(self) -> SystemSampler:
        psutil.cpu_percent()  # the first call only starts the measuring interval
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SYSTEM_INTERVAL_S):
            self.record()

    def record(self) -> None:
        """One sample into the outbox now (also before a trial's last report: a short trial gets one too).

        Each at a later millisecond than the last: MLflow links a model to its run's metrics at a step and refuses
        two values of one metric at one (time, step), which the thread and this last sample could otherwise give."""
        with self._lock:
            found = self.sample()
            self._last_ms = max(int(time.time() * 1000), self._last_ms + 1)
            self.outbox.metrics({self.prefix + k: v for k, v in found.items()}, self.step, self._last_ms)

    def sample(self) -> dict[str, float]:
        memory, disk, net = psutil.virtual_memory(), psutil.disk_usage(self.disk), psutil.net_io_counters()
        found = {"cpu_utilization_percentage": psutil.cpu_percent(),
                 "system_memory_usage_megabytes": memory.used / 1e6,
                 "system_memory_usage_percentage": memory.used / memory.total * 100,
                 "disk_usage_percentage": disk.percent, "disk_usage_megabytes": disk.used / 1e6,
                 "disk_available_megabytes": disk.free / 1e6,
                 "network_receive_megabytes": (net.bytes_recv - self._net.bytes_recv) / 1e6,
                 "network_transmit_megabytes": (net.bytes_sent - self._net.bytes_sent) / 1e6}
        return found | gpu_sample()


def gpu_sample() -> dict[str, float]:
    """Memory and (where NVML answers) utilisation of each visible CUDA device; nothing without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return {}
    found = {}
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        found |= {f"gpu_{i}_memory_usage_megabytes": (total - free) / 1e6,
                  f"gpu_{i}_memory_usage_percentage": (total - free) / total * 100}
        try:
            found[f"gpu_{i}_utilization_percentage"] = float(torch.cuda.utilization(i))
        except (ModuleNotFoundError, RuntimeError):  # no nvidia-ml-py, or NVML refused
            pass
    return found


def stage(local: Path, storage_root: str, run_id: str) -> str:
    """Copy a trial's final folder to Ray's storage, where the driver reaches it; its address there."""
    from amlab.platform import storage

    where = storage.join(storage_root, "final", run_id)
    storage.put_folder(local, where)
    return where
