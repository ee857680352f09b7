"""Start-up cost of a launch, cold and warm, and where the cold one goes; measured side by side in one run.

  cold   `amctl launch run` (lstm × copy, a few steps) in a fresh AMCTL_HOME with no Ray running: the
         process, imports, the stores' schemas, an embedded Ray, Tune, the trial, MLflow, teardown; and,
         interleaved, the same with Ray's default of a worker per CPU started as the launch's driver registers
  warm   the same launch in a home whose warm local cluster is up (`amctl cluster up`), as a user keeps one
         for many launches: served by its resident driver (platform/resident.py: imports done, Ray joined, the
         trial on a prestarted worker), the first one after `up` and later ones; and, for comparison, in its own
         process joining the head (AMCTL_RESIDENT=0)
  parts  each piece of the cold path on its own, in fresh processes: bare interpreter, imports (and the
         heaviest modules among them), the stores' first opening (MLflow's schema copied from this machine's
         cache, and migrated anew with an empty cache: platform/schema_cache.py), `ray.init` + `ray.shutdown` (as amctl
         starts it, without the head processes one fixed node has no use for: ray_runtime._lean_head; and with
         all that Ray starts by default), a reported trial's final dump (its heatmaps drawn), and the driver's first
         MLflow model logging with and without the preparation a launch does while its trials start.  A launch
         starts Ray on a thread while it imports and opens its stores, so the parts add up to more than it.
  --against  another checkout's cold launch (and final dump) interleaved with this one's: before and after

Every launch is checked to have trained its steps (a launch that trained nothing proves nothing).

    python bench/startup.py [--steps 50] [--repeats 2] [--against OTHER_CHECKOUT]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amlab.platform.local_cluster import PRESTART  # amctl sets it to 0 unless it is set

PY = sys.executable
AMCTL = [PY, str(Path(__file__).resolve().parents[1] / "amctl.py")]
HEAVY = ("torch", "ray", "ray.tune", "ray.train", "mlflow", "mlflow.genai", "matplotlib", "optuna", "sqlalchemy", "pandas")


def checkout(path: Path) -> list[str]:
    """The amctl command of another checkout (--against): its own venv's interpreter and its amctl.py."""
    return [str(path / ".venv" / "bin" / "python"), str(path / "amctl.py")]


def commit(path: Path) -> str:
    return subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def own_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment for a benchmark's child process, with no cluster and no store to join but what it makes
    itself (amctl's own in the AMCTL_HOME given in `extra`), whatever the shell it runs in points at."""
    return {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")} | (extra or {})


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=own_env(env), capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])}... failed:\n{done.stderr[-3000:]}")
    return elapsed, done


def served_launches(home: str) -> int:
    """How many launches a warm local cluster's resident driver has served in this home (its log's lines)."""
    log = Path(home) / "local-driver.log"
    return log.read_text().count("served launch run") if log.exists() else 0


def run_cmd(steps: int, *extra: str, amctl: list[str] = AMCTL) -> list[str]:
    """`amctl launch run` of the benchmarks' lstm × copy for `steps` steps."""
    return [*amctl, "launch", "run", "-m", "lstm", "-t", "copy", "--set", f"train.steps={steps}", *extra]


def checked(out: dict, steps: int, home: str, before: int, served: bool | None) -> dict:
    """A launch's `--json` output, refused unless it trained `steps` steps (and, with `served`, unless it ran in the
    resident or not, as asked: `before` is served_launches(home) before it)."""
    if out["reused"] or out["metrics"].get("step") != steps:  # a launch that trained nothing proves nothing
        sys.exit(f"the launch did not train {steps} steps: {out}")
    if served is not None and (served_launches(home) > before) != served:
        sys.exit(f"the launch was {'not ' * served}served by the resident driver: see {home}/local-driver.log")
    return out


def launch(home: str, steps: int, served: bool | None = None, env: dict[str, str] | None = None,
           amctl: list[str] = AMCTL) -> float:
    """One launch's wall time, checked to have trained (and, with `served`, to have run in the resident or not)."""
    cmd = run_cmd(steps, "--set", f"train.eval_every={steps}", "--set", "mechanism.d_model=16", "--fresh", "--json",
                  amctl=amctl)
    before = served_launches(home)
    elapsed, done = timed(cmd, {"AMCTL_HOME": home} | ({} if served is not False else {"AMCTL_RESIDENT": "0"}) | (env or {}))
    checked(json.loads(done.stdout[done.stdout.index("{"):]), steps, home, before, served)
    return elapsed


def imports() -> dict[str, float]:
    """Cumulative import time (s) of the launch path and of its heaviest packages, from `python -X importtime`."""
    _, done = timed([PY, "-X", "importtime", "-c", "import amctl, amlab.platform.api, amlab.platform.sweep"])
    cumulative = {}
    for line in done.stderr.splitlines():
        if m := re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line):
            cumulative.setdefault(m.group(3), int(m.group(1)) / 1e6)  # the first (outermost) import of each
    total = sum(v for k, v in cumulative.items() if "." not in k)
    return {"all imports": total, **{k: cumulative[k] for k in HEAVY if k in cumulative}}


def parts(home: str) -> dict[str, float]:
    bare, _ = timed([PY, "-c", "pass"])
    stores = ("from amlab.platform.settings import Settings; from amlab.platform.store import Store; "
              "from amlab.platform import tracking; s = Settings.load(); Store(s.db_url); tracking.client(s)")
    imported = "import amlab.platform.store, amlab.platform.tracking, amlab.platform.settings"
    without, _ = timed([PY, "-c", imported], {"AMCTL_HOME": home})
    uncached, _ = timed([PY, "-c", stores], {"AMCTL_HOME": home, "XDG_CACHE_HOME": tempfile.mkdtemp(prefix="amctl-bench-")})
    shutil.rmtree(home)
    with_stores, _ = timed([PY, "-c", stores], {"AMCTL_HOME": home})  # MLflow's schema from the cache (schema_cache.py)
    ray_cmd = ("import sys, time; from amlab.platform import ray_runtime; from amlab.platform.settings import Settings; "
               "import ray; t = time.perf_counter(); "
               "ray_runtime.ensure_ray(Settings.load()) if sys.argv[1] == 'amctl' else "
               "(ray_runtime.local_only(), ray.init(address='local', logging_level='ERROR', include_dashboard=False)); "
               "a = time.perf_counter(); ray_runtime.stop_ray(); print(a - t, time.perf_counter() - a)")
    times = {how: map(float, timed([PY, "-c", ray_cmd, how], {"AMCTL_HOME": home})[1].stdout.split()) for how in ("amctl", "ray")}
    (start, stop), (every, _) = times["amctl"], times["ray"]
    return {"interpreter start and exit": bare, "stores' first opening (schemas)": with_stores - without,
            "  the same with an empty schema cache": uncached - without,
            "ray.init (embedded, as amctl starts it)": start,
            "  every head process Ray starts by default": every, "ray.shutdown": stop}


DUMP = """
import sys, tempfile, time, torch
from pathlib import Path
from amlab.platform.spec import validate_run
from amlab.platform.train import dump_introspection
from amlab.workloads.model import build_model
from amlab.workloads.registry import TASKS
spec = validate_run({"mechanism": {"name": "lstm"}, "task": {"name": "copy"}})
task = TASKS.get("copy").build(spec.task_params())
model = build_model("lstm", spec.mechanism_params(), task, "copy")
cpu = time.process_time()
paths = dump_introspection(model, task, spec, torch.device("cpu"), Path(tempfile.mkdtemp()), heatmaps=True)
assert sum(p.suffix == ".png" for p in paths) >= 2, paths
print(time.process_time() - cpu)
"""
LOG_MODEL = """
import sys, time, torch
from amlab.platform import tracking
from amlab.platform.settings import Settings
c = tracking.client(Settings.load())
run = c.create_run(c.create_experiment("bench")).info.run_id
if sys.argv[1] == "prepared":  # as a launch does while its trials start, untimed here
    tracking.prepare_model_logging()
    tracking._prepared.join()
t = time.perf_counter()
tracking.log_model(c, Settings.load().mlflow_uri, run, torch.nn.Linear(4, 4), 1)
print(time.perf_counter() - t)
"""


def end_of_trial(python: str = PY) -> float:
    """CPU seconds of a reported trial's final dump (lstm × copy: traces and heatmaps), imports included, in a
    fresh process of `python` (this checkout's, or --against's)."""
    return float(timed([python, "-c", DUMP])[1].stdout)


def log_model(prepared: bool) -> float:
    """Wall seconds of a driver's first log_model in a fresh process and home, with MLflow's preparation done ahead
    (as a launch does while its trials start: tracking.prepare_model_logging) or not."""
    home = tempfile.mkdtemp(prefix="amctl-bench-")
    try:
        return float(timed([PY, "-c", LOG_MODEL, "prepared" if prepared else "cold"], {"AMCTL_HOME": home})[1].stdout)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--against", type=Path, help="another checkout of amctl with its own .venv (e.g. `git worktree add "
                    "/tmp/old COMMIT`): its cold launch interleaved with this one's, for a before/after ratio")
    args = ap.parse_args()
    other = checkout(args.against) if args.against else None
    homes, cold, prestarted, warm, joined, before = [], [], [], [], [], []
    for _ in range(args.repeats):  # interleaved: amctl's embedded Ray, the same with Ray's default prestart, --against
        homes.append(tempfile.mkdtemp(prefix="amctl-bench-"))
        cold.append(launch(homes[-1], args.steps))
        homes.append(tempfile.mkdtemp(prefix="amctl-bench-"))
        prestarted.append(launch(homes[-1], args.steps, env={PRESTART: "1"}))
        if other:
            homes.append(tempfile.mkdtemp(prefix="amctl-bench-"))
            before.append(launch(homes[-1], args.steps, amctl=other))
    warm_home = tempfile.mkdtemp(prefix="amctl-bench-")
    homes.append(warm_home)
    up, _ = timed([*AMCTL, "cluster", "up"], {"AMCTL_HOME": warm_home})  # a fresh home's local cluster
    try:
        first = launch(warm_home, args.steps, served=True)  # at once: its prestarted workers may still be importing
        for _ in range(args.repeats):
            time.sleep(3)  # between a user's commands: the resident tops its prestarted workers up
            warm.append(launch(warm_home, args.steps, served=True))
        for _ in range(args.repeats):
            joined.append(launch(warm_home, args.steps, served=False))
    finally:
        down, _ = timed([*AMCTL, "cluster", "down"], {"AMCTL_HOME": warm_home})
    pieces = parts(tempfile.mkdtemp(prefix="amctl-bench-"))
    pieces["a reported trial's final dump, CPU s (heatmaps drawn)"] = statistics.median(end_of_trial() for _ in range(3))
    if other:
        pieces[f"  the same with {args.against}"] = statistics.median(end_of_trial(other[0]) for _ in range(3))
    pieces["the driver's first log_model, MLflow not prepared"] = statistics.median(log_model(False) for _ in range(3))
    pieces["  prepared while the trials start (what a launch does)"] = statistics.median(log_model(True) for _ in range(3))
    imported = imports()
    for h in homes:
        shutil.rmtree(h, ignore_errors=True)
    c, w, j = statistics.median(cold), statistics.median(warm), statistics.median(joined)
    print(f"`amctl launch run` lstm × copy, {args.steps} steps, median of {args.repeats}")
    print(f"{'launch':52s} {'wall s':>7s}")
    print(f"{'cold (fresh home, embedded Ray)':52s} {c:7.1f}")
    p = statistics.median(prestarted)
    print(f"{'  the same with a worker per CPU prestarted (Ray default)':52s} {p:7.1f}   ÷ cold {p / c:.2f}")
    if other:
        b = statistics.median(before)
        print(f"{f'  cold with {args.against} ({commit(args.against)})':52s} {b:7.1f}   ÷ cold {b / c:.2f}"
              f"   (each: {', '.join(f'{x:.1f}' for x in before)} against {', '.join(f'{x:.1f}' for x in cold)})")
    print(f"{'warm: served by the resident, at once after up':52s} {first:7.1f}   cold ÷ it {c / first:.2f}")
    print(f"{'warm: served by the resident':52s} {w:7.1f}   cold ÷ it {c / w:.2f}")
    print(f"{'warm: own process joining the head (AMCTL_RESIDENT=0)':52s} {j:7.1f}   cold ÷ it {c / j:.2f}")
    print(f"{'amctl cluster up (fresh home) / down':52s} {up:7.1f} / {down:.1f}")
    print(f"\n{'where a cold launch goes (each alone)':52s} {'s':>7s} {'of cold':>8s}")
    for what, s in {**pieces, **imported}.items():
        print(f"{what:52s} {s:7.2f} {s / c:8.0%}")


if __name__ == "__main__":
    main()
