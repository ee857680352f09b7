"""Sweep throughput: N short trials through `amctl launch sweep` (computed concurrency) against the same
N trial configurations run one after another in a plain PyTorch loop, measured in one run.

The sweep side is the whole command as a user types it (process start, embedded Ray, Tune, Optuna,
MLflow, store, evaluations, checkpoints, dumps).  The plain side replays the exact configurations
the sweep's searcher chose (read back from the store), with all cores given to torch.

    python bench/sweep.py [--trials 8] [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from amlab.platform.settings import Settings
from amlab.platform.spec import validate_run
from amlab.platform.store import Store
from amlab.workloads.model import build_model, compute_loss
from amlab.workloads.registry import TASKS
from amlab.workloads.tasks.base import generator

AMCTL = [sys.executable, str(Path(__file__).resolve().parents[1] / "amctl.py")]


def plain(config: dict) -> float:
    spec = validate_run(config)
    entry = TASKS.get(spec.task.name)
    task = entry.build(spec.task_params())
    torch.manual_seed(spec.train.seed)
    model = build_model(spec.mechanism.name, spec.mechanism_params(), task, spec.task.name)
    opt = torch.optim.Adam(model.parameters(), lr=spec.train.lr)
    t0 = time.perf_counter()
    for step in range(spec.train.steps):
        batch = task.sample(generator(spec.train.seed, "train", 0, step), spec.train.batch_size, "train")
        logits, _ = model(batch.inputs)
        loss, _ = compute_loss(entry.loss, logits, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    spec = {
        "name": "bench", "mechanisms": {"lstm": {"d_model": 64}}, "tasks": {"copy": {"max_len": 10, "test_lens": [10, 20]}},
        "seeds": [0], "train": {"steps": args.steps, "batch_size": 32, "eval_every": args.steps // 3, "eval_batches": 2},
        "search": {"trials": args.trials, "scheduler": "fifo"},
    }
    with tempfile.TemporaryDirectory(prefix="amctl-bench-") as home:
        path = Path(home) / "sweep.yaml"
        path.write_text(yaml.safe_dump(spec))
        t0 = time.perf_counter()
        out = subprocess.run([*AMCTL, "launch", "sweep", str(path), "--json"], env={**os.environ, "AMCTL_HOME": home},
                             capture_output=True, text=True)
        swept = time.perf_counter() - t0
        if out.returncode != 0:
            sys.exit(f"sweep failed:\n{out.stderr[-3000:]}")
        os.environ["AMCTL_HOME"] = home
        store = Store(Settings.load().db_url)
        with store.session() as s:
            configs = [t.config for c in store.sweep(s, "bench").cells for t in c.trials]
        result = json.loads(out.stdout)
    torch.set_num_threads(os.cpu_count() or 1)
    sequential = sum(plain(c) for c in configs)
    print(f"{len(configs)} trials of lstm × copy, {args.steps} steps each, {os.cpu_count()} CPUs")
    print(f"{'what':48s} {'wall s':>8s}")
    print(f"{'amctl launch sweep (computed concurrency)':48s} {swept:8.1f}")
    print(f"{'same configs, plain PyTorch, one after another':48s} {sequential:8.1f}")
    print(f"ratio sweep / plain sequential: {swept / sequential:.2f}  "
          f"(concurrency {result['concurrency']}, status {result['status']})")


if __name__ == "__main__":
    main()
