"""Is data generation ever the bottleneck?  Per registered task: batch time / training-step time.

For every task at its default size, times (process CPU time, so other jobs on
a shared machine do not skew it; wall time is shown beside) `task.sample` for
a training batch and one training step of a small model on that batch (forward, backward,
Adam; LSTM with d_model 64, or the first compatible mechanism where an LSTM
cannot serve the modality), interleaved in one process so both see the same
machine load.  Target: generation under 10 % of a step.

    .venv/bin/python bench/tasks.py [--batch 32] [--reps 15] [--threads 1] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from amlab.workloads.model import IncompatibleCell, build_model, check_compatible, compute_loss
from amlab.workloads.registry import MECHANISMS, TASKS
from amlab.workloads.tasks.base import generator

TARGET = 0.10
D_MODEL = 64


def model_for(task_name: str, task):
    """(mechanism name, model): LSTM if it serves the task's modality, else the first mechanism that does."""
    for mech in ["lstm", *MECHANISMS.names()]:
        try:
            check_compatible(mech, task_name)
            entry = MECHANISMS.get(mech)
            params = entry.params(d_model=D_MODEL) if "d_model" in entry.params.model_fields else entry.params()
            return mech, build_model(mech, params, task, task_name)
        except IncompatibleCell:
            continue
    raise IncompatibleCell(f"no mechanism serves task {task_name!r}")


def bench(name: str, batch_size: int, reps: int) -> dict:
    entry = TASKS.get(name)
    task = entry.build(entry.params())
    torch.manual_seed(0)
    mech, model = model_for(name, task)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    cpu = {"gen": [], "step": []}
    wall = {"gen": [], "step": []}
    for step in range(reps + 2):  # the first two warm up allocators and kernels
        c0, w0 = time.process_time(), time.perf_counter()
        batch = task.sample(generator(0, "train", 0, step), batch_size, "train")
        c1, w1 = time.process_time(), time.perf_counter()
        logits, _ = model(batch.inputs)
        loss, per_example = compute_loss(entry.loss, logits, batch)
        aux = model.core.auxiliary_loss(per_example.detach())
        opt.zero_grad(set_to_none=True)
        (loss if aux is None else loss + aux).backward()
        opt.step()
        c2, w2 = time.process_time(), time.perf_counter()
        if step >= 2:
            cpu["gen"].append(c1 - c0), cpu["step"].append(c2 - c1)
            wall["gen"].append(w1 - w0), wall["step"].append(w2 - w1)
    med = {f"{k}_{part}": statistics.median(v[part]) * 1e3 for k, v in (("cpu", cpu), ("wall", wall)) for part in v}
    return {"task": name, "model": mech, "shape": tuple(batch.inputs.shape), **med,
            "ratio": med["cpu_gen"] / med["cpu_step"], "wall_ratio": med["wall_gen"] / med["wall_step"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: a shared machine; the loop's setting)")
    ap.add_argument("--only", nargs="*", help="task names (default: every registered task)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = args.only or TASKS.names()
    print(f"batch {args.batch}, median of {args.reps} steps, {args.threads} thread(s), CPU; step = forward+backward+Adam,"
          f" d_model {D_MODEL}; ms are process CPU time (robust to other load on a shared machine), wall ratio beside")
    print(f"{'task':<20} {'model':<14} {'input shape':<22} {'gen ms':>8} {'step ms':>8} {'gen/step':>9} {'(wall)':>8}")
    rows = []
    for name in names:
        r = bench(name, args.batch, args.reps)
        rows.append(r)
        flag = "" if r["ratio"] < TARGET else "  <-- over target"
        print(f"{r['task']:<20} {r['model']:<14} {str(r['shape']):<22} {r['cpu_gen']:8.3f} {r['cpu_step']:8.2f}"
              f" {r['ratio']:9.1%} {r['wall_ratio']:8.1%}{flag}")
    over = [r["task"] for r in rows if r["ratio"] >= TARGET]
    worst = max(rows, key=lambda r: r["ratio"])
    verdict = "PASS" if not over else "FAIL"
    print(f"verdict: {verdict}: {len(rows) - len(over)}/{len(rows)} tasks generate a batch in < {TARGET:.0%} of a training step"
          f" (worst {worst['task']} {worst['ratio']:.1%})" + (f"; over target: {', '.join(over)}" if over else ""))


if __name__ == "__main__":
    main()
