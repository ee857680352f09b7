"""Platform overhead: `amctl launch run` (lstm × copy) against the same steps in a plain PyTorch loop.

Everything is measured side by side in one run (the machines are noisy) and
printed as ratios:
  plain    the bare loop: same model, data, optimizer, batch size and threads; no eval, no logging
  process  the same bare loop as a whole `python` process (interpreter, torch import, model, loop)
  loop     amctl's training loop in-process (evaluation, checkpoints), no Ray, no MLflow
  launch   `amctl launch run` as a user types it: process start, embedded Ray, Tune, MLflow, store, dumps
           (and how many cores its trial's process and all others used while the trial ran)
  warm     (--warm) the same launch served by a warm local cluster's resident driver (`amctl cluster up`)
The launch command is timed with evaluation at the default cadence and with a single final evaluation.
`--only` times a subset beside the plain loop (a long run: `--steps 15000 --repeats 1 --only process,launch --warm`).
Trial speed compares training throughput alone: the median of the launch's logged `train/steps_per_s`
(one value per 50-step window, evaluation excluded) against the plain loop's median 50-step window.

    python bench/overhead.py [--steps 1000] [--repeats 2] [--warm] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import startup  # bench/startup.py: how it runs amctl, and what the resident served
import torch

from amlab.platform.sessions import LocalSession
from amlab.platform.spec import validate_run
from amlab.platform.train import train_loop
from amlab.platform.trial import TrialConfig
from amlab.workloads.model import build_model, compute_loss
from amlab.workloads.registry import TASKS
from amlab.workloads.tasks.base import generator

WINDOW = 50  # the loop's default log_every: one steps/s value per window
EVAL_EVERY = validate_run({"mechanism": {"name": "lstm"}, "task": {"name": "copy"}}).train.eval_every  # the default
NAMES = ("process", "loop-once", "loop", "launch-once", "launch")  # the plain loop always runs: the baseline


def plain(steps: int, spec, windows: list[float] | None = None) -> float:
    task = TASKS.get("copy").build(spec.task_params())
    torch.manual_seed(0)
    model = build_model("lstm", spec.mechanism_params(), task, "copy")
    opt = torch.optim.Adam(model.parameters(), lr=spec.train.lr)
    t0 = tick = time.perf_counter()
    for step in range(steps):
        if windows is not None and step and step % WINDOW == 0:
            windows.append(WINDOW / (time.perf_counter() - tick))
            tick = time.perf_counter()
        batch = task.sample(generator(0, "train", 0, step), spec.train.batch_size, "train")
        logits, _ = model(batch.inputs)
        loss, _ = compute_loss("bce", logits, batch)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return time.perf_counter() - t0


def process(steps: int) -> float:
    """The plain loop as its own process: what `python train.py` costs a user, start to exit."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import torch, overhead; "
            f"torch.set_num_threads({os.cpu_count() or 1}); from amlab.platform.spec import validate_run; "
            f"overhead.plain({steps}, validate_run({{'mechanism': {{'name': 'lstm'}}, 'task': {{'name': 'copy'}}}}))")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0


class CpuShare(threading.Thread):
    """Every process's CPU time, sampled every second while a launch runs: `cores()` is how many cores the
    trial's process and all the others (Ray's daemons, the driver, the rest of the machine) used while the
    trial's process was alive."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, dict[int, tuple[bool, float]]]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            now, seen = time.monotonic(), {}
            for p in psutil.process_iter(["cmdline", "cpu_times"]):
                try:
                    cpu = p.info["cpu_times"]
                    seen[p.pid] = (" ".join(p.info["cmdline"] or []).startswith("ray::ImplicitFunc"), cpu.user + cpu.system)
                except (psutil.Error, TypeError, AttributeError):
                    continue
            self.samples.append((now, seen))

    def cores(self) -> tuple[float, float]:
        self.done.set()
        self.join()
        live = [(t, seen) for t, seen in self.samples if any(trial for trial, _ in seen.values())]
        if len(live) < 2:
            sys.exit("no trial process was seen training: nothing to split")
        (t0, a), (t1, b) = live[0], live[-1]
        used = {pid: (b[pid][0], b[pid][1] - a[pid][1]) for pid in a.keys() & b.keys()}
        trial = sum(cpu for is_trial, cpu in used.values() if is_trial)
        return trial / (t1 - t0), sum(cpu for is_trial, cpu in used.values() if not is_trial) / (t1 - t0)


def trial_speed(home: str, run_id: str, eval_every: int) -> tuple[float, float, float]:
    """The median `train/steps_per_s` the launch's trial logged: of all its windows, of those right after an
    evaluation, and of the others.  The loop starts a window's clock once the evaluation before it and that
    evaluation's bookkeeping (checkpoint, MLflow flush, the report that waits for Tune's driver) are done, so the
    split checks that none of it leaks into training throughput; what evaluations cost shows in the launch's wall
    time (`launch` against `launch-once`)."""
    from mlflow.tracking import MlflowClient

    history = MlflowClient(f"sqlite:///{home}/mlflow.db").get_metric_history(run_id, "train/steps_per_s")
    after, rest = [], []
    for m in history:
        (after if m.step > WINDOW and (m.step - WINDOW) % eval_every == 0 else rest).append(m.value)
    return statistics.median(after + rest), statistics.median(after) if after else math.nan, statistics.median(rest)


def loop(steps: int, spec) -> float:
    t0 = time.perf_counter()
    train_loop(TrialConfig.local(spec, torch.get_num_threads()), LocalSession())
    return time.perf_counter() - t0


def amctl(home: str, *args: str) -> subprocess.CompletedProcess:
    return startup.timed([*startup.AMCTL, *args], {"AMCTL_HOME": home})[1]


def launch(home: str, steps: int, extra: list[str], speeds: list[tuple[float, float, float]] | None = None, warm: bool = False,
           shares: list[tuple[float, float]] | None = None) -> float:
    before, share = startup.served_launches(home), CpuShare() if shares is not None else None
    if share:
        share.start()
    t0 = time.perf_counter()
    out = amctl(home, "launch", "run", "-m", "lstm", "-t", "copy", "--set", f"train.steps={steps}", *extra, "--fresh", "--json")
    elapsed = time.perf_counter() - t0
    if share:
        shares.append(share.cores())
    done = json.loads(out.stdout)
    if done["reused"] or done["metrics"].get("step") != steps:  # a launch that trained nothing proves nothing
        sys.exit(f"amctl launch run did not train {steps} steps: {done}")
    if (startup.served_launches(home) > before) != warm:
        sys.exit(f"the launch was {'not ' * warm}served by a warm local cluster's resident driver")
    if speeds is not None:
        speeds.append(trial_speed(home, done["mlflow_run_id"], EVAL_EVERY))
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the median of each is shown")
    ap.add_argument("--warm", action="store_true", help="also time launches served by a warm local cluster")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(NAMES)} (default: all)")
    args = ap.parse_args()
    only = [n for n in args.only.split(",") if n] or list(NAMES)
    if unknown := set(only) - set(NAMES):
        ap.error(f"--only: unknown {sorted(unknown)}; accepted: {', '.join(NAMES)}")
    threads = os.cpu_count() or 1  # what `launch run` gives its single trial
    torch.set_num_threads(threads)
    spec = validate_run({"mechanism": {"name": "lstm"}, "task": {"name": "copy"}, "train": {"steps": args.steps}})
    once = validate_run({"mechanism": {"name": "lstm"}, "task": {"name": "copy"},
                         "train": {"steps": args.steps, "eval_every": args.steps}})
    home, warm_home = tempfile.mkdtemp(prefix="amctl-bench-"), tempfile.mkdtemp(prefix="amctl-bench-")
    first = launch(home, 50, [])  # creates the stores (MLflow's schema migrations): a once-per-home cost
    plain_windows: list[float] = []
    trial_speeds: list[tuple[float, float, float]] = []
    warm_speeds: list[tuple[float, float, float]] = []
    cold_shares: list[tuple[float, float]] = []
    warm_shares: list[tuple[float, float]] = []
    measures = {
        "plain": ("plain PyTorch loop", lambda: plain(args.steps, spec, plain_windows)),
        "process": ("plain PyTorch loop, whole process", lambda: process(args.steps)),
        "loop-once": ("amctl loop, in-process, eval once", lambda: loop(args.steps, once)),
        "loop": ("amctl loop, in-process, default eval", lambda: loop(args.steps, spec)),
        "launch-once": ("amctl launch run, eval once",
                        lambda: launch(home, args.steps, ["--set", f"train.eval_every={args.steps}"])),
        "launch": ("amctl launch run, default eval", lambda: launch(home, args.steps, [], trial_speeds, shares=cold_shares)),
    }
    measures = {k: v for k, v in measures.items() if k in only or k == "plain"}  # every ratio is against plain
    samples: dict[str, list[float]] = {label: [] for label, _ in measures.values()}
    for _ in range(args.repeats):  # interleaved, so slow drift in machine load hits every line alike
        for label, fn in measures.values():
            samples[label].append(fn())
    if args.warm:  # after the cold launches: one Ray on the machine at a time (their embedded ones, then the head)
        amctl(warm_home, "cluster", "up")
        try:
            for _ in range(args.repeats):  # beside the plain loop again, whose samples join the first phase's
                samples["plain PyTorch loop"].append(plain(args.steps, spec, plain_windows))
                samples.setdefault("amctl launch run, served warm", []).append(
                    launch(warm_home, args.steps, [], warm_speeds, warm=True, shares=warm_shares))
        finally:
            amctl(warm_home, "cluster", "down")
    times = {k: statistics.median(v) for k, v in samples.items()}
    base = times["plain PyTorch loop"]
    print(f"lstm × copy, {args.steps} steps, batch {spec.train.batch_size}, {threads} threads, median of {args.repeats}")
    print(f"{'what':40s} {'wall s':>8s} {'÷ plain':>8s}")
    for what, t in times.items():
        print(f"{what:40s} {t:8.1f} {t / base:8.2f}")
    if {"launch-once", "loop-once"} <= set(measures):
        fixed = times["amctl launch run, eval once"] - times["amctl loop, in-process, eval once"]
        print(f"fixed cost of process + Ray + Tune + MLflow + store: about {fixed:.1f} s per launch "
              f"(a first 50-step launch in a new AMCTL_HOME took {first:.1f} s: it also creates the stores)")
    whole = times.get("plain PyTorch loop, whole process")
    for label in ("amctl launch run, eval once", "amctl launch run, default eval", "amctl launch run, served warm"):
        if whole and label in times:
            print(f"{label} ÷ plain process: {times[label] / whole:.2f}")
    plain_speed = statistics.median(plain_windows)
    for what, speeds, shares in (("launch", trial_speeds, cold_shares), ("warm launch", warm_speeds, warm_shares)):
        if speeds:
            speed, after, rest = (statistics.median(x) for x in zip(*speeds, strict=True))
            print(f"trial speed: {speed:.1f} steps/s in the {what}'s trial against {plain_speed:.1f} in the plain loop "
                  f"({speed / plain_speed:.2f}×, median {WINDOW}-step windows)")
            print(f"  windows right after an evaluation {after / plain_speed:.2f}×, all others {rest / plain_speed:.2f}×")
        if shares:
            trial, rest = (statistics.median(x) for x in zip(*shares, strict=True))
            print(f"  while its trial ran: {trial:.2f} cores in the trial's process, {rest:.2f} in all others")
    for h in (home, warm_home):
        shutil.rmtree(h, ignore_errors=True)


if __name__ == "__main__":
    main()
