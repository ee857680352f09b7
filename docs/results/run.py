"""Run one preset end to end in a fresh AMCTL_HOME and commit its report as evidence: docs/results/PRESET.md.

    .venv/bin/python docs/results/run.py mqar-scaling        # the CPU-sized preset
    .venv/bin/python docs/results/run.py mqar-scaling:full   # paper scale (needs a GPU cluster: add --address)
    .venv/bin/python docs/results/run.py mqar-scaling --render HOME   # the page again from a kept run

The page starts with the command that made it, the versions, the machine, the scale and the wall time,
followed by `amctl report NAME --format md` of the finished sweep, verbatim.
"""

from __future__ import annotations

import argparse
import json
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


def git_sha() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("preset")
    ap.add_argument("--address", default=None, help="a Ray cluster; default: embedded local Ray")
    ap.add_argument("--render", metavar="HOME", default=None,
                    help="re-render the page from a finished run's AMCTL_HOME (kept by an earlier call) instead of running")
    args = ap.parse_args()
    if args.render:
        home = args.render
        run = json.loads((Path(home) / "ledger.json").read_text())
    else:
        home = tempfile.mkdtemp(prefix="amctl-ledger-")
        extra = ["--address", args.address] if args.address else []
        started, sha = time.time(), git_sha()  # the code the sweep runs: the checkout as it is now
        launched = subprocess.run([*AMCTL, "launch", "sweep", "--preset", args.preset, *extra],
                                  env={**os.environ, "AMCTL_HOME": home})
        run = {"wall": time.time() - started, "sha": sha, "finished": datetime.now(timezone.utc).isoformat()[:16],
               "address": args.address}
        (Path(home) / "ledger.json").write_text(json.dumps(run))
        if launched.returncode != 0:
            sys.exit(f"the sweep ended with exit code {launched.returncode}; no page written (stores kept in {home})")
    print(write_page(args.preset, home, run), f"(stores kept in {home})")


def write_page(name: str, home: str, run: dict) -> Path:
    from amlab.platform.presets import preset

    entry = preset(name)
    spec = entry["spec"]
    report = subprocess.run([*AMCTL, "report", spec["name"], "--format", "md"], env={**os.environ, "AMCTL_HOME": home},
                            capture_output=True, text=True, check=True).stdout
    versions = ", ".join(f"{p} {version(p)}" for p in ("amctl", "torch", "ray", "mlflow", "optuna"))
    sha = git_sha()
    code = f"git {run['sha'] or 'unknown'}" + (f" (report rendered at git {sha})" if sha != run["sha"] else "")
    header = [
        f"<!-- produced by: .venv/bin/python docs/results/run.py {name} -->",
        f"# Evidence: preset `{name}`", "",
        f"- **Command**: `.venv/bin/python docs/results/run.py {name}` "
        f"(= `amctl launch sweep --preset {name}` in a fresh `AMCTL_HOME`, "
        f"then `amctl report {spec['name']} --format md`)",
        f"- **What the papers predict**: {entry['predicts']}",
        f"- **Code**: {code}; {versions}; Python {platform.python_version()}",
        f"- **Cluster**: {run['address']}" if run.get("address") else
        f"- **Machine**: {os.cpu_count()} CPUs, {platform.machine()}, no GPU",
        f"- **Scale**: {len(spec['seeds'])} seeds, {spec['train']['steps']} steps, batch {spec['train']['batch_size']}, "
        f"{spec['search']['trials']} search trial(s) per cell",
        f"- **Wall time**: {run['wall'] / 60:.1f} min, finished {run['finished']} UTC", "", "---", "",
    ]
    out = Path(__file__).parent / f"{spec['name']}.md"
    out.write_text("\n".join(header) + report)
    return out


if __name__ == "__main__":
    main()
