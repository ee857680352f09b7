"""Where a training loop's reports and checkpoints go, and what it exports live.

Three sessions share one interface (rank, world size, device, prepare, restore, report), so the one loop
in train.py runs in-process (`LocalSession`), in a Tune trial (`TuneSession`) or on every Ray Train worker
(`TrainSession`); `RayMetrics` exports throughput and loss to Prometheus from inside Ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from amlab.platform.spec import RunSpec

CHECKPOINT = "state.pt"


class LocalSession:
    """No Ray: checkpoints in a folder, reports kept in a list (tests, benchmarks)."""

    rank, world_size = 0, 1
    report_every_s = 0.0  # reports between evaluations: every logging period, or at most this often

    def __init__(self, checkpoint_dir: str | Path | None = None):
        self.dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.reports: list[dict[str, Any]] = []

    def device(self, wanted: str) -> torch.device:
        return pick_device(wanted)

    def prepare(self, model: nn.Module) -> nn.Module:
        return model

    def restore(self) -> Path | None:
        return self.dir if self.dir and (self.dir / CHECKPOINT).exists() else None

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint is not None and self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            (checkpoint / CHECKPOINT).replace(self.dir / CHECKPOINT)


class TuneSession(LocalSession):
    """A single-worker trial: report through Ray Tune, checkpoints into Tune's storage.

    A function trainable reports synchronously: training waits until Tune's driver has taken the result (a
    few ms each, 3-4 % of a fast trial at one report per 50 steps).  Between evaluations a trial therefore
    reports at most every 2 s: enough for the live view and the store; MLflow still gets every period.
    """

    report_every_s = 2.0

    def restore(self) -> Path | None:
        import ray.tune

        ckpt = ray.tune.get_checkpoint()
        return Path(ckpt.to_directory()) if ckpt else None

    def report(self, metrics, checkpoint):
        import ray.tune

        ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(checkpoint) if checkpoint else None)


class TrainSession:
    """A Ray Train worker: DDP, per-rank shards, rank 0 checkpoints; every rank reports every logging period (ranks
    report in lockstep, so never on a clock of their own)."""

    report_every_s = 0.0

    def __init__(self):
        import ray.train

        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()

    def device(self, wanted: str) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device() if wanted != "cpu" else torch.device("cpu")

    def prepare(self, model: nn.Module) -> nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model) if self.world_size > 1 else model

    def restore(self) -> Path | None:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        return Path(ckpt.to_directory()) if ckpt else None

    def report(self, metrics, checkpoint):
        import ray.train

        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint) if checkpoint else None)


def pick_device(wanted: str) -> torch.device:
    if wanted == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is visible to this worker")
    return torch.device("cuda" if wanted != "cpu" and torch.cuda.is_available() else "cpu")


# -- live metrics for Prometheus / Grafana --------------------------------------------------------

class RayMetrics:
    """Throughput, loss, step and GPU memory as Ray metrics, exported to Prometheus as `ray_amctl_*`.

    Only inside Ray (a Tune trial or a Train worker): a LocalSession without
    Ray records nothing.  dashboards/grafana/amctl.json plots them.
    """

    KEYS = ("mechanism", "task", "seed", "rank", "run")

    def __init__(self, spec: RunSpec, rank: int, run_id: str):
        from ray.util import metrics

        self.tags = {"mechanism": spec.mechanism.name, "task": spec.task.name, "seed": str(spec.train.seed),
                     "rank": str(rank), "run": run_id}
        gauge = lambda name, what: metrics.Gauge(f"amctl_{name}", what, tag_keys=self.KEYS)  # noqa: E731
        self.gauges = {"train/steps_per_s": gauge("steps_per_s", "training steps per second"),
                       "train/loss": gauge("train_loss", "training loss, mean since the last log"),
                       "step": gauge("train_step", "optimizer steps done"),
                       "gpu": gauge("gpu_memory_bytes", "peak GPU memory allocated by this process")}

    @classmethod
    def if_in_ray(cls, spec: RunSpec, rank: int, run_id: str) -> RayMetrics | None:
        import ray

        return cls(spec, rank, run_id) if ray.is_initialized() else None

    def record(self, metrics: dict[str, float], step: int, device: torch.device) -> None:
        values = {**metrics, "step": step}
        if device.type == "cuda":
            values["gpu"] = torch.cuda.max_memory_allocated(device)
        for key, gauge in self.gauges.items():
            if key in values:
                gauge.set(float(values[key]), tags=self.tags)
