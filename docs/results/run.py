"""Run one preset end to end in a fresh AMCTL_HOME and commit its report as evidence: docs/results/PRESET.md.

    .venv/bin/python docs/results/run.py mqar-scaling        # the CPU-sized preset
    .venv/bin/python docs/results/run.py mqar-scaling:full   # paper scale (needs a GPU cluster: add --address)

The page starts with the command that made it, the versions, the machine, the scale and the wall time,
followed by `amctl report NAME --format md` of the finished sweep, verbatim.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
AMCTL = [sys.executable, str(REPO / "amctl.py")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("preset")
    ap.add_argument("--address", default=None, help="a Ray cluster; default: embedded local Ray")
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="amctl-ledger-")
    env = {**os.environ, "AMCTL_HOME": home}
    extra = ["--address", args.address] if args.address else []
    started = time.time()
    launched = subprocess.run([*AMCTL, "launch", "sweep", "--preset", args.preset, *extra], env=env)
    wall = time.time() - started
    if launched.returncode != 0:
        sys.exit(f"the sweep ended with exit code {launched.returncode}; no page written (stores kept in {home})")
    from amlab.platform.presets import preset

    spec = preset(args.preset)["spec"]
    report = subprocess.run([*AMCTL, "report", spec["name"], "--format", "md"], env=env, capture_output=True, text=True,
                            check=True).stdout
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    versions = ", ".join(f"{p} {version(p)}" for p in ("amctl", "torch", "ray", "mlflow", "optuna"))
    header = [
        f"<!-- produced by: .venv/bin/python docs/results/run.py {args.preset} -->",
        f"# Evidence: preset `{args.preset}`", "",
        f"- **Command**: `.venv/bin/python docs/results/run.py {args.preset}` "
        f"(= `amctl launch sweep --preset {args.preset}` in a fresh `AMCTL_HOME`, "
        f"then `amctl report {spec['name']} --format md`)",
        f"- **What the papers predict**: {preset(args.preset)['predicts']}",
        f"- **Code**: git {sha or 'unknown'}; {versions}; Python {platform.python_version()}",
        f"- **Machine**: {os.cpu_count()} CPUs, {platform.machine()}, no GPU" if not args.address else
        f"- **Cluster**: {args.address}",
        f"- **Scale**: {len(spec['seeds'])} seeds, {spec['train']['steps']} steps, batch {spec['train']['batch_size']}, "
        f"{spec['search']['trials']} search trial(s) per cell",
        f"- **Wall time**: {wall / 60:.1f} min, finished {datetime.now(timezone.utc).isoformat()[:16]} UTC", "", "---", "",
    ]
    out = Path(__file__).parent / f"{spec['name']}.md"
    out.write_text("\n".join(header) + report)
    print(out)


if __name__ == "__main__":
    main()
