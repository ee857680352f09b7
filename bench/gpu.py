"""GPU throughput: amctl's training loop on one GPU, per mechanism, as steps/s and model FLOP utilisation,
plus 2-worker DDP scaling efficiency when there are two GPUs; one script, a few minutes on one GPU.

  steps/s   what the loop itself reports (`train/steps_per_s`, evaluation time excluded), bf16 autocast
  MFU       model FLOPs per step (counted by torch's FlopCounterMode on one forward and backward) × steps/s,
            over the GPU's dense bf16 peak (known for a few data-centre GPUs; otherwise not shown)
  compiled  the transformer again with train.compile (torch.compile), steps/s after compilation, against eager
  DDP       `amctl launch run` with train.workers=2 on two GPUs against one worker, same global batch

The loop's GPU path does one host sync per logging period (the loss is summed on the device); the data is
generated on the CPU (the same seed gives the same batches on any device) and copied each step.

    python bench/gpu.py [--steps 600]
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

from amlab.platform.sessions import LocalSession
from amlab.platform.spec import validate_run
from amlab.platform.train import train_loop
from amlab.platform.trial import TrialConfig
from amlab.workloads.model import build_model, compute_loss
from amlab.workloads.registry import TASKS
from amlab.workloads.tasks.base import generator

PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}
TASK = {"name": "mqar", "vocab_size": 256, "seq_len": 256, "num_kv_pairs": 16}
MECHANISMS = {"transformer": {"d_model": 256, "heads": 4}, "linear_attention": {"d_model": 256}, "lstm": {"d_model": 256},
              "deltanet": {"d_model": 256}, "hyena": {"d_model": 256}}
AMCTL = [sys.executable, str(Path(__file__).resolve().parents[1] / "amctl.py")]


def flops_per_step(spec) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    entry = TASKS.get(spec.task.name)
    task = entry.build(spec.task_params())
    model = build_model(spec.mechanism.name, spec.mechanism_params(), task, spec.task.name).cuda()
    batch = task.sample(generator(0, "train", 0, 0), spec.train.batch_size, "train").to(torch.device("cuda"))
    with FlopCounterMode(display=False) as counter, torch.autocast("cuda", dtype=torch.bfloat16):
        logits, _ = model(batch.inputs)
        compute_loss(entry.loss, logits, batch)[0].backward()
    return float(counter.get_total_flops())


def gpu_spec(mechanism: str, params: dict, steps: int, compiled: bool = False):
    return validate_run({"mechanism": {"name": mechanism, **params}, "task": TASK,
                         "train": {"steps": steps, "batch_size": 64, "eval_every": steps, "log_every": 100, "device": "cuda",
                                   "compile": compiled}})


def steps_per_s(spec) -> float | None:
    """The median logged steps/s of the loop run in-process (the first window, warm-up or compilation, skipped)."""
    session = LocalSession()
    train_loop(TrialConfig.local(spec, threads=4), session)
    done = [r for r in session.reports if "train/steps_per_s" in r]
    if not done or done[-1]["step"] != spec.train.steps:
        return None
    return sorted(r["train/steps_per_s"] for r in done[1:] or done)[len(done[1:] or done) // 2]


def one_gpu(mechanism: str, params: dict, steps: int, peak: float | None) -> str:
    spec = gpu_spec(mechanism, params, steps)
    rate = steps_per_s(spec)
    if rate is None:
        return f"{mechanism:18s} did not train {steps} steps"
    flops = flops_per_step(spec)
    mfu = f"{rate * flops / peak:7.1%}" if peak else "    n/a"
    return f"{mechanism:18s} {rate:9.1f} {flops / 1e9:10.2f} {mfu}"


def ddp_scaling(steps: int) -> str:
    times = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory(prefix="amctl-gpu-") as home:
            cmd = [*AMCTL, "launch", "run", "-m", "transformer", "-t", "mqar", "--set", f"train.steps={steps}",
                   "--set", "train.device=cuda", "--set", f"train.workers={workers}", "--set", "train.batch_size=128",
                   "--set", f"train.eval_every={steps}", "--json"]
            t0 = time.perf_counter()
            done = subprocess.run(cmd, env={**os.environ, "AMCTL_HOME": home}, capture_output=True, text=True)
            if done.returncode != 0:
                return f"DDP failed with {workers} worker(s): {done.stderr.strip().splitlines()[-1:]}"
            out = json.loads(done.stdout[done.stdout.index("{"):])
            if out["metrics"].get("step") != steps:
                return f"DDP with {workers} worker(s) did not train {steps} steps"
            times[workers] = time.perf_counter() - t0
    return (f"DDP transformer × MQAR, global batch 128: 1 worker {times[1]:.1f} s, 2 workers {times[2]:.1f} s, "
            f"scaling efficiency {times[1] / (2 * times[2]):.0%} (whole launches)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing measured")
        sys.exit(77)
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    print(f"{name} ({torch.cuda.device_count()} GPUs), torch {torch.__version__}, bf16 peak "
          f"{f'{peak / 1e12:.0f} TFLOPS' if peak else 'unknown'}; MQAR length {TASK['seq_len']}, batch 64")
    print(f"{'mechanism':18s} {'steps/s':>9s} {'GFLOP/step':>10s} {'MFU':>7s}")
    for mechanism, params in MECHANISMS.items():
        print(one_gpu(mechanism, params, args.steps, peak), flush=True)
    eager, compiled = (steps_per_s(gpu_spec("transformer", MECHANISMS["transformer"], args.steps, c)) for c in (False, True))
    print(f"transformer compiled (train.compile): {compiled:.1f} steps/s against eager {eager:.1f}: "
          f"{compiled / eager:.2f}x" if eager and compiled else "transformer compiled: did not train every step", flush=True)
    print(ddp_scaling(args.steps) if torch.cuda.device_count() >= 2 else "DDP scaling: needs 2 GPUs (this machine has 1)")


if __name__ == "__main__":
    main()
