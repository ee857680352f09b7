"""What a launch's display costs its trial: the cores each kind of process takes while `amctl launch run` (lstm ×
copy) trains, in a terminal (a pseudo-terminal: the progress bar is drawn, as a user sees it) and with `--json`
(nothing drawn), in interleaved rounds on fresh homes.  The driver's share is taken from the trial's cores on a
machine whose every core the trial was given (bench/overhead.py's CpuShare splits them).

    python bench/terminal.py [--steps 8000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import pty
import statistics
import subprocess
import sys
import tempfile
import threading

import startup  # bench/startup.py: the amctl command
from overhead import CpuShare

from amlab.platform.settings import Settings
from amlab.platform.store import Store


def launch(steps: int, terminal: bool) -> dict[str, float]:
    """One launch in a fresh home, its cores by kind (CpuShare.KINDS) while its trial ran, refused unless it
    trained every step (and, in a terminal, drew something)."""
    with tempfile.TemporaryDirectory(prefix="amctl-bench-") as home:
        env = startup.own_env({"AMCTL_HOME": home, "TERM": "xterm-256color", "COLUMNS": "120"})
        cmd = startup.run_cmd(steps, *([] if terminal else ["--json"]))
        share, drawn = CpuShare(), [0]
        share.start()
        if terminal:
            main, child = pty.openpty()
            proc = subprocess.Popen(cmd, env=env, stdin=child, stdout=child, stderr=child, close_fds=True)
            os.close(child)

            def drain() -> None:  # a terminal reads what it is sent: the command never blocks on a full pipe
                while True:
                    try:
                        data = os.read(main, 65536)
                    except OSError:  # the command has exited and closed its end
                        return
                    if not data:
                        return
                    drawn[0] += len(data)

            reader = threading.Thread(target=drain, daemon=True)
            reader.start()
            proc.wait()
            reader.join(timeout=5)
            os.close(main)
        else:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        cores = share.cores()
        if proc.returncode != 0:
            sys.exit(f"the launch failed (exit {proc.returncode})")
        os.environ["AMCTL_HOME"] = home
        store = Store(Settings.load().db_url)
        with store.session() as s:
            done = [t.steps_done for sweep in store.sweeps(s) for c in sweep.cells for t in c.trials]
        if done != [steps]:  # a launch that trained nothing proves nothing
            sys.exit(f"the launch did not train one trial of {steps} steps: {done}")
        if terminal and drawn[0] == 0:
            sys.exit("nothing was drawn in the terminal")
        return cores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds: a terminal launch, then a --json one")
    args = ap.parse_args()
    rounds = [(launch(args.steps, True), launch(args.steps, False)) for _ in range(args.repeats)]
    print(f"lstm × copy, {args.steps} steps, {args.repeats} rounds; cores used while the trial ran (median over rounds)")
    print(f"{'launch':16s} " + " ".join(f"{k:>8s}" for k in CpuShare.KINDS))
    for i, label in enumerate(("in a terminal", "--json")):
        print(f"{label:16s} " + " ".join(f"{statistics.median(r[i][k] for r in rounds):8.3f}" for k in CpuShare.KINDS))
    extra = [r[0]["driver"] - r[1]["driver"] for r in rounds]
    print(f"drawing the progress bar: {statistics.median(extra):+.3f} cores in amctl's driver "
          f"(by round: {', '.join(f'{x:+.3f}' for x in extra)})")


if __name__ == "__main__":
    main()
