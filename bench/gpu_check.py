"""The GPU check: the CUDA paths CI cannot run, end to end through `amctl launch sweep`, in a few minutes on one GPU.

  ddp-nccl   transformer × MQAR trained by a 2-worker Ray Train DDP trial on the NCCL backend (each worker on
             its own GPU when there are two; sharing the one GPU, half each, when there is one)
  bf16-cell  a sweep cell on CUDA with bf16 autocast: a 2-configuration search, then 2 seeds
  compiled   one trial with train.compile (torch.compile, inductor on CUDA) under bf16 autocast

Each check runs in a fresh AMCTL_HOME and passes when the sweep FINISHES, every trial trained all its
steps on `cuda`, and its metrics are finite.  Prints one line per check and exits 1 if any failed
(77 when there is no CUDA device: nothing was checked).

    python bench/gpu_check.py [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

AMCTL = [sys.executable, str(Path(__file__).resolve().parents[1] / "amctl.py")]
TASK = {"mqar": {"vocab_size": 64, "seq_len": 64, "num_kv_pairs": 8}}


def checks(steps: int, gpus: int) -> dict[str, dict]:
    train = {"steps": steps, "batch_size": 64, "eval_every": steps // 3, "log_every": steps // 6, "device": "cuda"}
    return {
        "ddp-nccl": {"mechanisms": {"transformer": {"d_model": 128, "heads": 4}}, "tasks": TASK, "seeds": [0],
                     "train": train, "search": {"trials": 1, "scheduler": "fifo"},
                     "resources": {"workers_per_trial": 2, "gpus_per_worker": 1 if gpus >= 2 else 0.5}},
        "bf16-cell": {"mechanisms": {"transformer": {"d_model": 128, "heads": 4}}, "tasks": TASK, "seeds": [0, 1],
                      "train": train, "search": {"trials": 2, "scheduler": "fifo"},
                      "resources": {"gpus_per_worker": 1 if gpus >= 2 else 0.5}},
        "compiled": {"mechanisms": {"transformer": {"d_model": 128, "heads": 4}}, "tasks": TASK, "seeds": [0],
                     "train": {**train, "compile": True}, "search": {"trials": 1, "scheduler": "fifo"},
                     "resources": {"gpus_per_worker": 1}},
    }


def run(name: str, spec: dict, steps: int) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix=f"amctl-gpu-{name}-") as home:
        path = Path(home) / "spec.yaml"
        path.write_text(yaml.safe_dump({"name": name, **spec}))
        done = subprocess.run([*AMCTL, "launch", "sweep", str(path), "--json"], env={**os.environ, "AMCTL_HOME": home},
                              capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return False, f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}"
        os.environ["AMCTL_HOME"] = home
        from amlab.platform.settings import Settings
        from amlab.platform.store import Store

        store = Store(Settings.load().db_url)
        with store.session() as s:
            trials = [t for c in store.sweep(s, name).cells for t in c.trials]
            bad = [t.id for t in trials if t.status != "FINISHED" or t.steps_done != steps
                   or t.config["train"]["device"] != "cuda"
                   or t.config["train"].get("compile", False) != spec["train"].get("compile", False)
                   or not all(math.isfinite(v) for v in t.metrics.values() if isinstance(v, float))]
        outcome = json.loads(done.stdout[done.stdout.index("{"):])
        return not bad and outcome["status"] == "FINISHED", f"{len(trials)} trials, {len(bad)} bad, status {outcome['status']}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing checked")
        sys.exit(77)
    gpus = torch.cuda.device_count()
    print(f"{gpus} × {torch.cuda.get_device_name(0)}, torch {torch.__version__}, NCCL {torch.cuda.nccl.version()}")
    failed = 0
    for name, spec in checks(args.steps, gpus).items():
        t0 = time.perf_counter()
        ok, what = run(name, spec, args.steps)
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {name:10s} {time.perf_counter() - t0:6.1f} s  {what}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
