"""Memory of a small sweep: `amctl launch sweep` against bare Ray Tune running the same trial configurations.

Both run 2 trials at a time on an embedded local Ray (no dashboard, as amctl starts it).  The peak is the
largest total PSS (proportional set size: shared pages split between the processes sharing them) of the
command's whole process tree (driver, Ray's daemons, the trial workers), sampled every 0.2 s, and how that
peak splits between the three.

  amctl  `amctl launch sweep` as a user types it (MLflow, the stores, evaluations, checkpoints, dumps)
  tune   a bare Tune script: the same configurations through the plain loop of bench/sweep.py, one report
         per trial, `reuse_actors=True`, nothing tracked
  layers a worker's private memory import by import: a bare Tune trial's modules, then what an amctl trial adds,
         then MLflow and its SQL store, which trials held until they stopped opening the stores (platform/outbox.py)

    python bench/memory.py [--trials 2] [--steps 1500]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import startup  # bench/startup.py: a child process's own environment
import sweep  # bench/sweep.py: the same benchmark sweep and its check
import yaml

HERE = Path(__file__).resolve().parent
AMCTL = [sys.executable, str(HERE.parent / "amctl.py")]
BARE_TUNE = """
import json, sys, ray
from ray import tune
import sweep as b
from amlab.platform.ray_runtime import local_only
local_only()
ray.init(address="local", logging_level="ERROR", include_dashboard=False)
def trial(config):
    import torch
    torch.set_num_threads(1)
    tune.report({"seconds": b.plain(config["c"])})
configs = json.loads(sys.stdin.read())
tuner = tune.Tuner(tune.with_resources(trial, {"cpu": 1}), param_space={"c": tune.grid_search(configs)},
                   tune_config=tune.TuneConfig(max_concurrent_trials=2, reuse_actors=True),
                   run_config=tune.RunConfig(storage_path=sys.argv[1], verbose=0))
assert not tuner.fit().errors
ray.shutdown()
"""


def role(p: psutil.Process, root: psutil.Process) -> str:
    """Where a process of the tree belongs: the command itself, a Ray worker (trials run there), or Ray's daemons."""
    if p.pid == root.pid:
        return "driver"
    return "workers" if p.name().startswith("ray::") and "Agent" not in p.name() else "Ray daemons"


def peak_pss(cmd: list[str], env: dict[str, str], stdin: str | None = None) -> tuple[float, str, dict[str, float]]:
    """Run `cmd`; the peak total PSS (MiB) of its process tree, its stdout, and that peak split by role."""
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    proc.stdin.write(stdin or "")
    proc.stdin.close()
    root, peak, split = psutil.Process(proc.pid), 0.0, {}
    while proc.poll() is None:
        roles: dict[str, float] = {}
        for p in [root, *root.children(recursive=True)]:
            try:
                where = role(p, root)
                roles[where] = roles.get(where, 0.0) + p.memory_full_info().pss / 2**20
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        if sum(roles.values()) > peak:
            peak, split = sum(roles.values()), roles
        time.sleep(0.2)
    out, err = proc.stdout.read(), proc.stderr.read()
    if proc.returncode != 0:
        sys.exit(f"{cmd[1:3]} failed:\n{err[-3000:]}")
    return peak, out, split


# what a trial worker holds, layer by layer: a bare Tune trial's modules, then what an amctl trial adds (its whole
# worker: local_cluster.PRELOADED), then what it no longer imports
LAYERS = (("a bare Tune trial: torch (its optimizers import torch._dynamo), ray.tune", "torch, torch._dynamo, ray.tune"),
          ("+ amlab's loop and mechanisms: an amctl trial's worker", "amlab.platform.train, amlab.workloads.registry"),
          ("(+ mlflow, which its workers no longer import)", "mlflow"),
          ("(+ MLflow's SQL store: SQLAlchemy, alembic)", "mlflow.store.tracking.sqlalchemy_store"))


def worker_layers() -> list[tuple[str, float]]:
    """Private memory (USS, MiB) of a fresh interpreter after importing each layer of LAYERS on top of the last."""
    found = []
    for i, (what, _) in enumerate(LAYERS):
        code = ("import psutil; " + "; ".join(f"import {m}" for _, m in LAYERS[: i + 1]) +
                "; print(psutil.Process().memory_full_info().uss)")
        found.append((what, int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                               check=True).stdout) / 2**20))
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=2, help="searched configurations (then the best on one seed)")
    ap.add_argument("--steps", type=int, default=1500)
    args = ap.parse_args()
    spec = sweep.bench_spec(args.trials, args.steps, 64)
    env = startup.own_env()
    with tempfile.TemporaryDirectory(prefix="amctl-bench-") as home:
        path = Path(home) / "sweep.yaml"
        path.write_text(yaml.safe_dump(spec))
        amctl, out, amctl_split = peak_pss([*AMCTL, "launch", "sweep", str(path), "--json"], env | {"AMCTL_HOME": home})
        configs, _ = sweep.trained_configs(home, args.trials, args.steps)  # and their training seconds
        concurrency = json.loads(out)["concurrency"]
        tune, _, tune_split = peak_pss([sys.executable, "-c", BARE_TUNE, str(Path(home) / "bare")],
                                       env | {"PYTHONPATH": str(HERE)}, json.dumps(configs))
    print(f"{len(configs)} trials of lstm × copy, {args.steps} steps, 2 at a time (amctl's concurrency: {concurrency})")
    roles = ("driver", "workers", "Ray daemons")
    print(f"{'what':40s} {'peak PSS MiB':>13s}" + "".join(f"{r:>13s}" for r in roles))
    for what, total, split in (("bare Ray Tune, same configurations", tune, tune_split),
                               ("amctl launch sweep", amctl, amctl_split)):
        print(f"{what:40s} {total:13.0f}" + "".join(f"{split.get(r, 0):13.0f}" for r in roles))
    print(f"amctl ÷ bare Tune: {amctl / tune:.2f}")
    print("where a worker's memory goes (fresh interpreters, private memory):")
    last = 0.0
    for what, uss in worker_layers():
        print(f"  {what:72s} {uss:6.0f} MiB ({uss - last:+.0f})" if last else f"  {what:72s} {uss:6.0f} MiB")
        last = uss


if __name__ == "__main__":
    main()
