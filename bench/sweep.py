"""Sweep throughput: N trials through `amctl launch sweep` (computed concurrency) against the same N trial
configurations run one after another in a plain PyTorch loop, and as a bare Ray task pool; one run.

  amctl   the whole command as a user types it (process start, embedded Ray, Tune, Optuna, MLflow, store,
          evaluations, checkpoints, dumps)
  plain   the exact configurations the sweep's searcher chose (read back from the store), one after
          another in this process, all cores given to torch
  pool    the same configurations as Ray tasks (one CPU and one torch thread each) in a fresh process:
          `ray.init`, the tasks, `ray.shutdown` (what a hand-written Ray script costs); once with every
          configuration at once, and once with the sweep's dependency: the searched ones first, then the
          chosen one, which a script can only train once it knows which is best

`--substantial` trains 8 × 4000 steps of a wider model (the regime a real sweep is in); the default is
8 short trials (300 steps), where fixed costs dominate.  `--warm` also times the same sweep served by a fresh
home's warm local cluster (`amctl cluster up` before it, untimed: platform/resident.py).  `--against` also
times another checkout's cold sweep of the same spec (checked to train the same configurations).

    python bench/sweep.py [--trials 8] [--steps 300 | --substantial] [--warm] [--against OTHER_CHECKOUT]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import startup  # bench/startup.py: how another checkout (--against) is run
import torch
import yaml

from amlab.platform.local_cluster import RECORD
from amlab.platform.settings import Settings
from amlab.platform.spec import validate_run
from amlab.platform.status import Phase
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


def pool(configs: list[dict], stages: int = 1) -> tuple[float, float]:
    """The configurations as a bare Ray task pool, timed as a whole process (start, ray.init, tasks, shutdown), and
    the seconds its tasks spent in their training loops, summed.  `stages=2`: the searched configurations (all
    but the last) first, and the last one once they are all done, as a script that picks the best configuration
    before training it on the reported seed must (the sweep's own dependency)."""
    here = str(Path(__file__).parent)
    code = (f"import json, sys, ray; sys.path.insert(0, {here!r}); import sweep as b; "
            "from amlab.platform.ray_runtime import local_only; local_only(); ray.init(address='local', logging_level='ERROR'); "
            "f = ray.remote(num_cpus=1)(lambda c: (__import__('torch').set_num_threads(1), b.plain(c))[1]); "
            f"cs = json.loads(sys.stdin.read()); parts = [cs] if {stages} == 1 else [cs[:-1], cs[-1:]]; "
            "print(sum(sum(ray.get([f.remote(c) for c in part])) for part in parts)); ray.shutdown()")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], input=json.dumps(configs), capture_output=True, text=True,
                          env=startup.own_env({"PYTHONPATH": here}))
    if done.returncode != 0:
        sys.exit(f"the Ray pool failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0, float(done.stdout.split()[-1])


def bench_spec(trials: int, steps: int, width: int) -> dict:
    """The benchmark sweep: `trials` searched configurations of lstm × copy, then the best one on seed 0."""
    return {
        "name": "bench", "mechanisms": {"lstm": {"d_model": width}}, "tasks": {"copy": {"max_len": 10, "test_lens": [10, 20]}},
        "seeds": [0], "train": {"steps": steps, "batch_size": 32, "eval_every": steps // 3, "eval_batches": 2},
        "search": {"trials": trials, "scheduler": "fifo"},
    }


def trained_configs(home: str, trials: int, steps: int) -> tuple[list[dict], float]:
    """The configurations the sweep in `home` trained, refused unless every trial ran all its steps (the timed
    work ran: every searched configuration, then the chosen one on seed 0, at full length; in that order), and the seconds its
    trials spent training, summed (see `training_seconds`)."""
    os.environ["AMCTL_HOME"] = home
    store = Store(Settings.load().db_url)
    with store.session() as s:
        done = sorted((t for c in store.sweep(s, "bench").cells for t in c.trials), key=lambda t: t.phase is Phase.SEED)
        if len(done) != trials + 1 or any(t.steps_done != steps for t in done):
            sys.exit(f"the sweep did not train {trials} × {steps} steps: {[t.steps_done for t in done]}")
        return [t.config for t in done], sum(training_seconds(home, t.mlflow_run_id) for t in done)


def training_seconds(home: str, run_id: str) -> float:
    """A trial's time in its training steps, from the `train/steps_per_s` it logged for each window (the steps since
    the value before, over that rate): what the pool's tasks time in `plain`, without evaluations and their
    bookkeeping, which the loop keeps out of its windows."""
    from mlflow.tracking import MlflowClient

    history = sorted(MlflowClient(f"sqlite:///{home}/mlflow.db").get_metric_history(run_id, "train/steps_per_s"),
                     key=lambda m: m.step)
    return sum((m.step - before) / m.value for before, m in zip([0] + [m.step for m in history], history, strict=False))


def launch(spec: dict, trials: int, steps: int, warm: bool,
           amctl: list[str] = AMCTL) -> tuple[float, float, dict, tuple[list[dict], float]]:
    """`amctl launch sweep` in a fresh home, timed as a whole command, with its driver's CPU seconds (the cores the
    driver takes from the trials); `warm`: served by that home's warm local cluster (`amctl cluster up` first,
    untimed, and checked in its driver's log to have served the sweep)."""
    with tempfile.TemporaryDirectory(prefix="amctl-bench-") as home:
        env = startup.own_env({"AMCTL_HOME": home})
        path = Path(home) / "sweep.yaml"
        path.write_text(yaml.safe_dump(spec))
        if warm:
            subprocess.run([*amctl, "cluster", "up"], env=env, capture_output=True, check=True)
            time.sleep(5)  # a user's next command: the prestarted workers have imported by then
        try:
            cpu = driver_cpu(home, warm)
            t0 = time.perf_counter()
            out = subprocess.run([*amctl, "launch", "sweep", str(path), "--json"], env=env, capture_output=True, text=True)
            swept = time.perf_counter() - t0
            cpu = driver_cpu(home, warm) - cpu
            if warm and "served launch sweep" not in (Path(home) / "local-driver.log").read_text():
                sys.exit("the warm sweep was not served by the local cluster's driver")
        finally:
            if warm:
                subprocess.run([*amctl, "cluster", "down"], env=env, capture_output=True)
        if out.returncode != 0:
            sys.exit(f"sweep failed:\n{out.stderr[-3000:]}")
        return swept, cpu, json.loads(out.stdout), trained_configs(home, trials, steps)


def driver_cpu(home: str, warm: bool) -> float:
    """CPU seconds so far of the process that drives the sweep: the warm cluster's resident driver, or else this
    process's finished children (the `amctl` command; Ray's processes are not waited for by it, so not counted)."""
    if warm:
        times = psutil.Process(json.loads((Path(home) / RECORD).read_text())["driver"]["pid"]).cpu_times()
        return times.user + times.system
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--substantial", action="store_true", help="8 × 4000 steps of lstm d_model=128")
    ap.add_argument("--warm", action="store_true", help="also the sweep served by a warm local cluster (cluster up)")
    ap.add_argument("--against", type=Path, help="another checkout of amctl with its own .venv (e.g. `git worktree add "
                    "/tmp/old COMMIT`): its cold sweep of the same spec right after this one's, for a before/after ratio")
    args = ap.parse_args()
    width = 64
    if args.substantial:
        args.steps, width = 4000, 128
    spec = bench_spec(args.trials, args.steps, width)
    swept, cpu, result, (configs, trained) = launch(spec, args.trials, args.steps, warm=False)
    if args.warm:
        warm_swept, warm_cpu, warm_result, (warm_configs, warm_trained) = launch(spec, args.trials, args.steps, warm=True)
        if warm_configs != configs:
            sys.exit("the warm sweep trained other configurations than the cold one (the same seeded spec)")
    if args.against:
        before, before_cpu, _, (before_configs, _) = launch(spec, args.trials, args.steps, warm=False,
                                                             amctl=startup.checkout(args.against))
        if before_configs != configs:
            sys.exit(f"{args.against} trained other configurations than this checkout (the same seeded spec)")
    pooled, pool_trained = pool(configs)
    staged, staged_trained = pool(configs, stages=2)
    torch.set_num_threads(os.cpu_count() or 1)
    sequential = sum(plain(c) for c in configs)
    slots = result["concurrency"]
    print(f"{len(configs)} trials of lstm (d_model={width}) × copy, {args.steps} steps each, {os.cpu_count()} CPUs")
    print(f"{'what':52s} {'wall s':>8s} {'speed-up':>9s} {'training s':>11s} {'the rest s':>11s}")
    print(f"{'same configs, plain PyTorch, one after another':52s} {sequential:8.1f} {1:9.2f} {sequential:11.1f} {0:11.1f}")
    rows = [("same configs, bare Ray task pool (whole process)", pooled, pool_trained),
            ("  the same pool, search first, then the chosen one", staged, staged_trained),
            (f"amctl launch sweep (concurrency {slots})", swept, trained)]
    if args.warm:
        rows.append(("amctl launch sweep, served by a warm local cluster", warm_swept, warm_trained))
    for label, wall, training in rows:  # the rest: the wall time less the training spread over the slots
        print(f"{label:52s} {wall:8.1f} {sequential / wall:9.2f} {training:11.1f} {wall - training / slots:11.1f}")
    print(f"amctl ÷ pool: {swept / pooled:.2f}, ÷ the pool that searches first: {swept / staged:.2f}   "
          f"(status {result['status']}; the amctl process used {cpu:.1f} CPU s)")
    print(f"  its trials' training steps ran at {pool_trained / trained:.2f}× the pool tasks' speed; training s sums every "
          f"trial's steps (evaluations excluded), the rest is the wall time less training s ÷ {slots} slots")
    print(f"  ceiling here: {sequential / (pool_trained / slots):.2f}× sequential, for any {slots}-slot schedule of these trials "
          "at the speed the pool's tasks trained side by side (no start-up, no slot ever idle)")
    if args.against:
        label = f"  the same with {args.against} ({startup.commit(args.against)})"
        print(f"{label:52s} {before:8.1f} {sequential / before:9.2f}")
        print(f"  it ÷ this checkout: {before / swept:.2f}   (its amctl process used {before_cpu:.1f} CPU s)")
    if args.warm:
        print(f"warm amctl ÷ pool: {warm_swept / pooled:.2f}   (status {warm_result['status']}; its driver used "
              f"{warm_cpu:.1f} CPU s; its trials trained at {pool_trained / warm_trained:.2f}× the pool tasks' speed)")


if __name__ == "__main__":
    main()
