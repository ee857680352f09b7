"""Launch cost without the machine's drift: `amctl launch run` (lstm × copy) and the same steps as a plain PyTorch
process, started together and run in turns.  Every PERIOD s one of the two is stopped whole (SIGSTOP: the launch's
driver, Ray's processes and its trial; or the plain process) and the other continued, so both meet the same drift
(this machine's plain loop has gone from 340 to 239 steps/s within minutes, more than the gaps measured).  Each
one's active time is the sum of its turns until it exits; when one exits, the other runs on alone.

It prints, per round and as the median and range over rounds:
  time    launch ÷ plain process, active times (start, imports, training, evaluations, exit: all of it)
  speed   the trial's logged 50-step windows ÷ the plain process's, the windows wholly inside their own turns
  cores   what the trial's process, amctl's driver, Ray's processes and the rest of the machine used in the
          launch's turns while its trial trained
`--warm`: the launch served by a fresh home's warm local cluster (`amctl cluster up` before it, untimed), whose
processes take their turns with the launch's.
`--load CORES` instead runs two plain processes in turns, one of them beside a nice-0 process busy for CORES of
a core in 100 wake-ups a second: what a load that size beside a 2-thread loop costs it.  Set CORES to the
launch's driver, Ray and rest cores together to see how much of the trial's gap that load alone explains.
A stopped process's timers run on: a wait for a timer that spans a stop ends sooner in active time (the launch
is the one that waits on timers, in its start-up), which favours the launch slightly.

    python bench/alternate.py [--steps 34000] [--repeats 1] [--period 1.5] [--warm | --load CORES]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import startup  # bench/startup.py: how it runs amctl
from overhead import WINDOW, CpuShare, logged_windows, spread

KINDS = ("trial", "driver", "ray")  # of the launch's processes: its trial's, amctl's (the command or the resident), Ray's
MARGIN = 0.3  # seconds into a turn before a window counts: the first after a continue pays for cold caches

PLAIN = """import json, sys, time
sys.path.insert(0, {here!r})
import torch, overhead
from amlab.platform.spec import validate_run
torch.set_num_threads({threads})
ends = []
overhead.plain({steps}, validate_run({{"mechanism": {{"name": "lstm"}}, "task": {{"name": "copy"}}}}), ends=ends)
print(json.dumps(ends))
"""
LOAD = ("import time\nwhile True:\n    t = time.perf_counter()\n    while time.perf_counter() - t < {busy}: pass\n"
        "    time.sleep({idle})")


def plain_process(steps: int) -> subprocess.Popen:
    code = PLAIN.format(here=str(Path(__file__).parent), threads=os.cpu_count() or 1, steps=steps)
    return subprocess.Popen([sys.executable, "-c", code], env=startup.own_env(), stdout=subprocess.PIPE, text=True)


def tree(roots: list[int]) -> set[int]:
    pids = set()
    for pid in roots:
        try:
            pids |= {pid} | {c.pid for c in psutil.Process(pid).children(recursive=True)}
        except psutil.Error:
            continue
    return pids


def send(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue


def busy_seconds() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq


class Turns:
    """Two groups of processes run in turns of `period` s: each group is its leader, whose exit ends its turns, and
    every process under its roots (the leader's, and a warm cluster's)."""

    def __init__(self, leaders: dict[str, subprocess.Popen], roots: dict[str, list[int]], period: float):
        self.leaders, self.roots, self.period = leaders, roots, period
        self.active = dict.fromkeys(leaders, 0.0)
        self.turns: dict[str, list[tuple[float, float]]] = {name: [] for name in leaders}  # (start, end), time.time()
        self.cores = dict.fromkeys((*KINDS, "rest", "seconds"), 0.0)  # in the launch's turns while its trial trained

    def alive(self, name: str) -> bool:
        return self.leaders[name].poll() is None

    def run(self) -> None:
        names, stopped = list(self.leaders), {name: set() for name in self.leaders}
        i = 0
        try:
            while any(self.alive(n) for n in names):
                name, other = names[i % 2], names[(i + 1) % 2]
                i += 1
                if not self.alive(name):
                    continue
                stopped[other] = tree(self.roots[other])  # a warm cluster stays stopped after its launch exits
                send(stopped[other], signal.SIGSTOP)
                send(stopped[name] | tree(self.roots[name]), signal.SIGCONT)
                before, t0 = self.usage(name), time.time()
                try:
                    self.leaders[name].wait(self.period)
                except subprocess.TimeoutExpired:
                    pass
                t1 = time.time()
                self.active[name] += t1 - t0
                self.turns[name].append((t0, t1))
                self.count(before, self.usage(name), t1 - t0)
        finally:  # never leave a stopped process behind
            for name in names:
                send(stopped[name] | tree(self.roots[name]), signal.SIGCONT)

    def usage(self, name: str) -> dict[str, float] | None:
        """CPU seconds by kind, for the launch's group while its trial's process lives."""
        if name != "launch":
            return None
        got = dict.fromkeys(KINDS, 0.0) | {"busy": busy_seconds()}
        for pid in tree(self.roots[name]):
            try:
                p = psutil.Process(pid)
                cpu = p.cpu_times()
                kind = CpuShare.kind(" ".join(p.cmdline()))
                got[kind if kind in KINDS else "ray"] += cpu.user + cpu.system  # in the group and not amctl's: Ray's
            except psutil.Error:
                return None
        return got if got["trial"] else None

    def count(self, before, after, seconds: float) -> None:
        if before is None or after is None:
            return
        used = {kind: after[kind] - before[kind] for kind in KINDS}
        for kind, cpu in used.items():
            self.cores[kind] += cpu
        self.cores["rest"] += after["busy"] - before["busy"] - sum(used.values())
        self.cores["seconds"] += seconds

    def inside(self, name: str, start: float, end: float) -> bool:
        return any(t0 + MARGIN < start and end < t1 for t0, t1 in self.turns[name])


def plain_windows(turns: Turns, name: str, proc: subprocess.Popen, steps: int) -> list[float]:
    ends = json.loads(proc.communicate()[0])
    if len(ends) != (steps - 1) // WINDOW + 1:
        sys.exit(f"the plain process did not train {steps} steps: {len(ends)} windows")
    return [WINDOW / (b - a) for a, b in zip(ends, ends[1:], strict=False) if turns.inside(name, a, b)]


def launch_round(steps: int, period: float, warm: bool) -> dict[str, float]:
    home, cluster = tempfile.mkdtemp(prefix="amctl-bench-"), []
    if warm:  # untimed: a user keeps one up; its processes (head, resident driver, workers) take turns with the launch
        since = time.time() - 1
        startup.timed([*startup.AMCTL, "cluster", "up"], {"AMCTL_HOME": home})
        cluster = [p.pid for p in psutil.process_iter(["create_time"]) if p.info["create_time"] >= since and p.pid != os.getpid()]
    launch = subprocess.Popen(startup.run_cmd(steps, "--fresh", "--json"), env=startup.own_env({"AMCTL_HOME": home}),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.kill(launch.pid, signal.SIGSTOP)  # neither starts before the turns do
    plain = plain_process(steps)
    os.kill(plain.pid, signal.SIGSTOP)
    turns = Turns({"launch": launch, "plain": plain}, {"launch": [launch.pid, *cluster], "plain": [plain.pid]}, period)
    try:
        turns.run()
    finally:
        if warm:
            startup.timed([*startup.AMCTL, "cluster", "down"], {"AMCTL_HOME": home})
    out, err = launch.communicate()
    if launch.returncode:
        sys.exit(f"amctl launch run failed:\n{err[-3000:]}")
    done = startup.checked(json.loads(out), steps, home, 0, warm)
    trial = [m.value for m in logged_windows(home, done["mlflow_run_id"])
             if turns.inside("launch", m.timestamp / 1000 - WINDOW / m.value, m.timestamp / 1000)]
    base = plain_windows(turns, "plain", plain, steps)
    shutil.rmtree(home, ignore_errors=True)
    enough(trial, base)
    c = turns.cores
    if not c["seconds"]:
        sys.exit("no turn of the launch was measured whole while its trial trained: train more steps")
    return {"time": turns.active["launch"] / turns.active["plain"], "launch s": turns.active["launch"],
            "plain s": turns.active["plain"], "speed": statistics.median(trial) / statistics.median(base),
            **{f"{kind} cores": c[kind] / c["seconds"] for kind in (*KINDS, "rest")}}


def load_round(steps: int, period: float, cores: float) -> dict[str, float]:
    busy = cores / 100
    load = subprocess.Popen([sys.executable, "-c", LOAD.format(busy=busy, idle=0.01 - busy)])
    loaded, plain = plain_process(steps), plain_process(steps)
    for p in (load, loaded, plain):
        os.kill(p.pid, signal.SIGSTOP)
    turns = Turns({"loaded": loaded, "plain": plain}, {"loaded": [loaded.pid, load.pid], "plain": [plain.pid]}, period)
    try:
        turns.run()
    finally:
        load.kill()
    with_load, base = plain_windows(turns, "loaded", loaded, steps), plain_windows(turns, "plain", plain, steps)
    enough(with_load, base)
    return {"time": turns.active["loaded"] / turns.active["plain"],
            "speed": statistics.median(with_load) / statistics.median(base)}


def enough(a: list[float], b: list[float]) -> None:
    if min(len(a), len(b)) < 10:
        sys.exit(f"too few windows inside turns ({len(a)} and {len(b)}): train more steps or take longer turns")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=34000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--period", type=float, default=1.5, help="seconds per turn")
    ap.add_argument("--warm", action="store_true", help="the launch served by a warm local cluster (`amctl cluster up`)")
    ap.add_argument("--load", type=float, help="run a plain process beside this many cores of load against one without")
    args = ap.parse_args()
    if args.load is not None and not 0 < args.load < 1:
        sys.exit("--load: a share of one core, between 0 and 1")
    rounds = []
    for i in range(args.repeats):
        if args.load is None:
            r = launch_round(args.steps, args.period, args.warm)
        else:
            r = load_round(args.steps, args.period, args.load)
        print(f"round {i + 1}: " + ", ".join(f"{k} {v:.3f}" if v < 10 else f"{k} {v:.1f}" for k, v in r.items()), flush=True)
        rounds.append(r)
    what = f"amctl launch run{', served warm' * args.warm}"
    if args.load:
        what = f"a plain process beside {args.load:g} cores of load"
    print(f"\n{what}, {args.steps} steps, in turns of {args.period:g} s, {args.repeats} round(s):")
    print(f"  time:  {spread([r['time'] for r in rounds])}× the plain process's (active time)")
    print(f"  speed: {spread([r['speed'] for r in rounds])}× the plain process's (median {WINDOW}-step windows inside turns)")
    if args.load is None:
        print("  cores in the launch's turns while its trial trained: " + ", ".join(
            f"{k} {statistics.median(r[k + ' cores'] for r in rounds):.3f}" for k in (*KINDS, "rest")))


if __name__ == "__main__":
    main()
