"""Platform overhead: `amctl launch run` (lstm × copy) against the same steps in a plain PyTorch loop.

Everything is measured side by side in one run, in interleaved rounds: each round runs the plain loop and
then every other measure once, and each ratio is taken within its round, then summarised as the median and
range over rounds (this machine's speed drifts by more than the differences measured; a ratio of medians
taken an hour apart would mix that drift in):
  plain    the bare loop: same model, data, optimizer, batch size and threads; no eval, no logging
  process  the same bare loop as a whole `python` process (interpreter, torch import, model, loop)
  ray-task the same bare loop as one Ray task holding every CPU, in a fresh process with its own `ray.init`
           (what running in a Ray worker costs training, apart from amctl's loop, Tune and MLflow)
  loop     amctl's training loop in-process (evaluation, checkpoints), no Ray, no MLflow
  launch   `amctl launch run` as a user types it: process start, embedded Ray, Tune, MLflow, store, dumps
           (and how many cores its trial's process, amctl's driver, Ray's own processes and the rest used while it trained)
  warm     (--warm) the same launch served by a warm local cluster's resident driver (`amctl cluster up`)
The launch command is timed with evaluation at the default cadence and with a single final evaluation.
`--only` times a subset beside the plain loop (a 2-minute run: `--steps 34000 --repeats 2 --only process,launch`).
Trial speed compares training throughput alone: the median of the launch's logged `train/steps_per_s`
(one value per 50-step window, evaluation excluded) against the same round's plain loop's median 50-step window.

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
from amlab.platform.train import make_optimizer, measured, save_checkpoint, train_loop
from amlab.platform.trial import TrialConfig
from amlab.workloads.model import build_model, compute_loss
from amlab.workloads.registry import TASKS
from amlab.workloads.tasks.base import generator

WINDOW = 50  # the loop's default log_every: one steps/s value per window
EVAL_EVERY = validate_run({"mechanism": {"name": "lstm"}, "task": {"name": "copy"}}).train.eval_every  # the default
NAMES = ("process", "ray-task", "loop-once", "loop", "launch-once", "launch")  # the plain loop always runs: the baseline


def plain(steps: int, spec, windows: list[float] | None = None, ends: list[float] | None = None) -> float:
    """The bare loop; `windows` gets each 50-step window's steps/s, `ends` the wall-clock time (time.time()) each
    window starts and ends at (one more than the windows: bench/alternate.py matches them to its turns)."""
    task = TASKS.get("copy").build(spec.task_params())
    torch.manual_seed(0)
    model = build_model("lstm", spec.mechanism_params(), task, "copy")
    opt = torch.optim.Adam(model.parameters(), lr=spec.train.lr)
    t0 = tick = time.perf_counter()
    for step in range(steps):
        if ends is not None and step % WINDOW == 0:
            ends.append(time.time())
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


def counted(steps: int, threads: int) -> str:
    """The plain loop at `threads` threads, as JSON: its 50-step windows and the CPU seconds this process used
    while it ran (every thread: torch's, and a Ray worker's own)."""
    import resource

    torch.set_num_threads(threads)
    windows, before = [], resource.getrusage(resource.RUSAGE_SELF)
    plain(steps, validate_run({"mechanism": {"name": "lstm"}, "task": {"name": "copy"}}), windows)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return json.dumps({"windows": windows, "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime})


def process(steps: int, r: Round) -> float:
    """The plain loop as its own process: what `python train.py` costs a user, start to exit (its 50-step windows
    and CPU seconds too: a fresh process, as the launch's trial is, unlike the loop in this long-lived one)."""
    return _child(f"print(overhead.counted({steps}, {os.cpu_count() or 1}))", steps, r, "process")


def ray_task(steps: int, r: Round) -> float:
    """The same plain loop as one Ray task holding every CPU (as `launch run`'s trial does), in a fresh process:
    `ray.init`, the task, `ray.shutdown`.  Against `process`, it separates what running in a Ray worker costs
    training from what amctl's loop, Tune and MLflow add."""
    cpus = os.cpu_count() or 1
    return _child("import ray; from amlab.platform.ray_runtime import local_only; local_only(); "
                  "ray.init(address='local', include_dashboard=False, logging_level='ERROR'); "
                  f"print(ray.get(ray.remote(num_cpus={cpus})(overhead.counted).remote({steps}, {cpus}))); "
                  "ray.shutdown()", steps, r, "ray task")


def _child(code: str, steps: int, r: Round, what: str) -> float:
    here = str(Path(__file__).parent)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {here!r}); import overhead; {code}"],
                          check=True, capture_output=True, text=True,
                          env=startup.own_env({"PYTHONPATH": here}))
    elapsed = time.perf_counter() - t0
    out = json.loads(done.stdout.splitlines()[-1])
    if len(out["windows"]) != (steps - 1) // WINDOW:  # a window closes at every 50th step after the first
        sys.exit(f"the {what} did not train {steps} steps: {len(out['windows'])} windows")
    r.windows[what], r.cpu[what] = out["windows"], out["cpu"]
    return elapsed


class CpuShare(threading.Thread):
    """Every process's CPU time, sampled every second while a launch runs: `cores()` is how many cores each kind
    of process (KINDS) used while the trial's process was alive."""

    KINDS = ("trial", "driver", "ray", "rest")  # the trial's process; amctl's (the command, or the resident that
    # served it); Ray's own (raylet, GCS, agents, idle workers); the rest of the machine (this benchmark included)

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, dict[int, tuple[str, float]]]] = []
        self.done = threading.Event()

    @staticmethod
    def kind(cmdline: str) -> str:
        if cmdline.startswith("ray::ImplicitFunc"):
            return "trial"
        if "amctl.py" in cmdline or "amlab.platform.resident" in cmdline:
            return "driver"
        return "ray" if cmdline.startswith("ray::") or "/site-packages/ray/" in cmdline else "rest"

    def run(self) -> None:
        while not self.done.wait(1.0):
            now, seen = time.monotonic(), {}
            for p in psutil.process_iter(["cmdline", "cpu_times"]):
                try:
                    cpu = p.info["cpu_times"]
                    seen[p.pid] = (self.kind(" ".join(p.info["cmdline"] or [])), cpu.user + cpu.system)
                except (psutil.Error, TypeError, AttributeError):
                    continue
            self.samples.append((now, seen))

    def cores(self) -> dict[str, float]:
        self.done.set()
        self.join()
        live = [(t, seen) for t, seen in self.samples if any(kind == "trial" for kind, _ in seen.values())]
        if len(live) < 2:
            sys.exit("no trial process was seen training: nothing to split")
        (t0, a), (t1, b) = live[0], live[-1]
        used = [(b[pid][0], b[pid][1] - a[pid][1]) for pid in a.keys() & b.keys()]
        return {kind: sum(cpu for k, cpu in used if k == kind) / (t1 - t0) for kind in self.KINDS}


def trial_speed(home: str, run_id: str, eval_every: int) -> tuple[float, float, float]:
    """The median `train/steps_per_s` the launch's trial logged: of all its windows, of those right after an
    evaluation, and of the others.  The loop starts a window's clock once the evaluation before it and that
    evaluation's bookkeeping (checkpoint, MLflow flush, the report that waits for Tune's driver) are done, so the
    split checks that none of it leaks into training throughput; what evaluations cost shows in the launch's wall
    time (`launch` against `launch-once`)."""
    after, rest = [], []
    for m in logged_windows(home, run_id):
        (after if m.step > WINDOW and (m.step - WINDOW) % eval_every == 0 else rest).append(m.value)
    return statistics.median(after + rest), statistics.median(after) if after else math.nan, statistics.median(rest)


def logged_windows(home: str, run_id: str) -> list:
    """The `train/steps_per_s` a launch's trial logged in its home's MLflow, one per 50-step window (with its step
    and the wall-clock time it was logged at)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{home}/mlflow.db").get_metric_history(run_id, "train/steps_per_s")


def evaluation_cost(spec) -> tuple[float, float, float]:
    """Seconds for one evaluation as the loop makes it along the way (the validation split), for the final one
    (validation and test splits) and for a checkpoint's save: the medians of 10 each, in this process, on the
    untrained model (evaluation's cost does not depend on the weights).  A launch makes steps ÷ eval_every of
    them, the last one final; the plain loop none."""
    task = TASKS.get("copy").build(spec.task_params())
    model = build_model("lstm", spec.mechanism_params(), task, "copy")
    opt, sched = make_optimizer(model, spec.train)
    trial, cpu, evals, finals, saves = TrialConfig.local(spec, torch.get_num_threads()), torch.device("cpu"), [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(10):
            t0 = time.perf_counter()
            measured(trial, model, task, cpu, test=False)
            t1 = time.perf_counter()
            measured(trial, model, task, cpu, test=True)
            t2 = time.perf_counter()
            save_checkpoint(Path(tmp), model, opt, sched, 0)
            evals.append(t1 - t0)
            finals.append(t2 - t1)
            saves.append(time.perf_counter() - t2)
    return statistics.median(evals), statistics.median(finals), statistics.median(saves)


def loop(steps: int, spec) -> float:
    t0 = time.perf_counter()
    train_loop(TrialConfig.local(spec, torch.get_num_threads()), LocalSession())
    return time.perf_counter() - t0


def amctl(home: str, *args: str) -> subprocess.CompletedProcess:
    return startup.timed([*startup.AMCTL, *args], {"AMCTL_HOME": home})[1]


def launch(home: str, steps: int, extra: list[str], speeds: list[tuple[float, float, float]] | None = None, warm: bool = False,
           shares: list[dict[str, float]] | None = None) -> float:
    before, share = startup.served_launches(home), CpuShare() if shares is not None else None
    if share:
        share.start()
    t0 = time.perf_counter()
    out = amctl(home, *startup.run_cmd(steps, *extra, "--fresh", "--json", amctl=[]))
    elapsed = time.perf_counter() - t0
    if share:
        shares.append(share.cores())
    done = startup.checked(json.loads(out.stdout), steps, home, before, warm)
    if speeds is not None:
        speeds.append(trial_speed(home, done["mlflow_run_id"], EVAL_EVERY))
    return elapsed


def spread(values: list[float]) -> str:
    """The median of per-round values, with their range when there is more than one round."""
    mid = statistics.median(values)
    return f"{mid:.2f}" + (f" ({min(values):.2f}–{max(values):.2f})" if len(values) > 1 else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds; each ratio is per round, then the median")
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
    measures = {
        "process": ("plain PyTorch loop, whole process", lambda r: process(args.steps, r)),
        "ray-task": ("plain PyTorch loop as a Ray task", lambda r: ray_task(args.steps, r)),
        "loop-once": ("amctl loop, in-process, eval once", lambda r: loop(args.steps, once)),
        "loop": ("amctl loop, in-process, default eval", lambda r: loop(args.steps, spec)),
        "launch-once": ("amctl launch run, eval once",
                        lambda r: launch(home, args.steps, ["--set", f"train.eval_every={args.steps}"])),
        "launch": ("amctl launch run, default eval",
                   lambda r: launch(home, args.steps, [], r.speeds, shares=r.shares)),
    }
    measures = {k: v for k, v in measures.items() if k in only}
    # each round times the plain loop and then every measure once, so that every ratio pairs runs made minutes
    # apart, not an hour: this machine's speed drifts by more than the differences measured
    rounds = [Round.run(spec, args.steps, measures) for _ in range(args.repeats)]
    if args.warm:  # after the cold launches: one Ray on the machine at a time (their embedded ones, then the head)
        amctl(warm_home, "cluster", "up")
        warm = {k: v for k, v in measures.items() if k == "process"} | {"warm": (
            "amctl launch run, served warm", lambda r: launch(warm_home, args.steps, [], r.speeds, warm=True, shares=r.shares))}
        try:
            rounds += [Round.run(spec, args.steps, warm) for _ in range(args.repeats)]
        finally:
            amctl(warm_home, "cluster", "down")
    report(args, spec, threads, rounds, first)
    one, final, save = evaluation_cost(spec)
    count = args.steps // spec.train.eval_every
    print(f"evaluations: {count} in a launch at the default cadence (every {spec.train.eval_every} steps); one takes "
          f"{one * 1000:.0f} ms in-process (validation split; the final one, with the test split, {final * 1000:.0f} ms) "
          f"and its checkpoint's save {save * 1000:.1f} ms: about {(count - 1) * one + final + count * save:.1f} s of each "
          "launch (their reports to Tune's driver come on top)")
    for h in (home, warm_home):
        shutil.rmtree(h, ignore_errors=True)


class Round:
    """One interleaved round: the plain loop (its 50-step windows too), then each measure once."""

    def __init__(self):
        self.times: dict[str, float] = {}
        self.plain_windows: list[float] = []
        self.windows: dict[str, list[float]] = {}  # the plain loop's windows in its own process, in a Ray task
        self.cpu: dict[str, float] = {}  # and its CPU seconds there
        self.speeds: list[tuple[float, float, float]] = []  # the round's launch trial: all, after an evaluation, other
        self.shares: list[dict[str, float]] = []  # cores of the launch's processes by kind (CpuShare.KINDS)

    @classmethod
    def run(cls, spec, steps: int, measures: dict) -> Round:
        r = cls()
        r.times["plain PyTorch loop"] = plain(steps, spec, r.plain_windows)
        for label, fn in measures.values():
            r.times[label] = fn(r)
        return r

    def ratio(self, label: str, base: str = "plain PyTorch loop") -> float | None:
        return self.times[label] / self.times[base] if label in self.times and base in self.times else None


def report(args, spec, threads: int, rounds: list[Round], first: float) -> None:
    labels = list(dict.fromkeys(k for r in rounds for k in r.times))
    print(f"lstm × copy, {args.steps} steps, batch {spec.train.batch_size}, {threads} threads, {args.repeats} rounds "
          f"(ratios per round, then their median and range)")
    print(f"{'what':40s} {'wall s':>8s}  ÷ plain")
    for label in labels:
        walls = [r.times[label] for r in rounds if label in r.times]
        print(f"{label:40s} {statistics.median(walls):8.1f}  {spread([r.ratio(label) for r in rounds if label in r.times])}")
    if all(r.ratio("amctl launch run, eval once", "amctl loop, in-process, eval once") for r in rounds[:args.repeats]):
        fixed = statistics.median(r.times["amctl launch run, eval once"] - r.times["amctl loop, in-process, eval once"]
                                  for r in rounds[:args.repeats])
        print(f"fixed cost of process + Ray + Tune + MLflow + store: about {fixed:.1f} s per launch "
              f"(a first 50-step launch in a new AMCTL_HOME took {first:.1f} s: it also creates the stores)")
    for label in ("amctl launch run, eval once", "amctl launch run, default eval", "amctl launch run, served warm"):
        paired = [x for r in rounds if (x := r.ratio(label, "plain PyTorch loop, whole process"))]
        if paired:
            print(f"{label} ÷ plain process: {spread(paired)}")
    plain_speeds = [statistics.median(r.plain_windows) for r in rounds]
    print(f"plain loop speed by round: {', '.join(f'{s:.0f}' for s in plain_speeds)} steps/s (this machine's drift)")
    tasked = [r for r in rounds if {"process", "ray task"} <= r.cpu.keys()]
    if tasked:
        speed = [statistics.median(r.windows["ray task"]) / statistics.median(r.windows["process"]) for r in tasked]
        cpu = [r.cpu["ray task"] / r.cpu["process"] for r in tasked]
        print(f"the plain loop as a Ray task: {spread(speed)}× the plain process's speed (median {WINDOW}-step windows), "
              f"{spread(cpu)}× its CPU seconds for the same steps")
    for what, label in (("launch", "amctl launch run, default eval"), ("warm launch", "amctl launch run, served warm")):
        mine = [(r, r.speeds[0]) for r in rounds if label in r.times and r.speeds]
        if not mine:
            continue
        for base, windows in (("plain loop in this process", lambda r: r.plain_windows),
                              ("plain loop's own process", lambda r: r.windows.get("process"))):
            if not all(windows(r) for r, _ in mine):
                continue
            each = [tuple(v / statistics.median(windows(r)) for v in speeds) for r, speeds in mine]
            print(f"trial speed in the {what}: {spread([e[0] for e in each])}× the same round's {base} "
                  f"(median {WINDOW}-step windows)")
            after, rest = spread([e[1] for e in each]), spread([e[2] for e in each])
            print(f"  windows right after an evaluation {after}×, all others {rest}×")
        shares = [s for r, _ in mine for s in r.shares]
        if shares:
            trial, driver, ray, rest = (statistics.median(s[k] for s in shares) for k in CpuShare.KINDS)
            print(f"  while its trial ran: {trial:.3f} cores in the trial's process; in the others {driver:.3f} in amctl's "
                  f"driver, {ray:.3f} in Ray's own processes, {rest:.3f} in the rest of the machine (this benchmark's too)")


if __name__ == "__main__":
    main()
