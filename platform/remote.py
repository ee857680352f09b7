"""Remote work through the Ray Jobs API: submit a launch to a cluster, follow it, list, stop.

An `http(s)://HEAD:8265` address (from `--address` or `RAY_ADDRESS`) means "a Ray cluster's dashboard":
the CLI validates the spec here, then submits `python amctl.py launch ...` as a Ray job.  The job's
`working_dir` is a small staged copy of the project in its installed layout (`amctl.py`,
`amlab/platform`, `amlab/workloads`, the spec): the code that runs is the code that was submitted,
while the heavy dependencies (ray, torch, mlflow, optuna, a PostgreSQL driver) come from the cluster's
Python, which the node image (`cluster/Dockerfile`) provides.  The store locations set here travel as
environment variables.  Inside the job, `ray.init()` joins the cluster through the `RAY_ADDRESS`
that the Jobs API sets.

Ray's token authentication is honoured as Ray itself reads it: `RAY_AUTH_MODE=token` with the token
in `RAY_AUTH_TOKEN`, or in the file `RAY_AUTH_TOKEN_PATH` (default `~/.ray/auth_token`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from amlab.platform import layout
from amlab.platform.errors import BadInput
from amlab.platform.settings import WITHHELD, split_secrets

# what the job needs to find the same stores (only those set here travel; unset ones default on the cluster)
JOB_ENV = ("AMCTL_HOME", "AMCTL_DB_URL", "MLFLOW_TRACKING_URI", "AMCTL_OPTUNA_URL", "AMCTL_RAY_STORAGE", "AMCTL_ARTIFACTS",
           "AMCTL_STORAGE",
           "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
# `amctl cancel` stops a job with SIGINT and gives it time to close its runs and rows (Ray's default: SIGTERM, 3 s);
# the driver's `ray.init(runtime_env=...)` (store settings for every worker) is merged into the job's
JOB_FLAGS = {"RAY_JOB_STOP_SIGNAL": "SIGINT", "RAY_JOB_STOP_WAIT_TIME_S": "60", "RAY_OVERRIDE_JOB_RUNTIME_ENV": "1"}
ACTIVE = ("PENDING", "RUNNING")  # Ray job states (JobStatus), not amctl's
TOKEN_HELP = ("set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN, or in a file named by "
              "RAY_AUTH_TOKEN_PATH (default ~/.ray/auth_token); on the head node `ray get-auth-token` prints it")


class RemoteError(BadInput):
    """A problem the user can fix (address, token, job name); nothing was submitted or stopped."""


def _status(job) -> str:
    return getattr(job.status, "value", str(job.status))


def jobs_address(address: str | None) -> str | None:
    """The dashboard URL when the address (or RAY_ADDRESS) names one; None means a GCS address or local Ray."""
    address = address or os.environ.get("RAY_ADDRESS")
    return address.rstrip("/") if address and address.startswith(("http://", "https://")) else None


def require_address(address: str | None) -> str:
    """The dashboard URL, or a RemoteError saying how to name the cluster."""
    url = jobs_address(address)
    if url is None:
        raise RemoteError("no cluster: give --address http://HEAD:8265 or set RAY_ADDRESS to the dashboard URL")
    return url


@contextmanager
def _errors(address: str) -> Iterator[None]:
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as e:
        first = str(e).strip().splitlines()[0]
        mode = os.environ.get("RAY_AUTH_MODE", "unset")
        raise RemoteError(f"the Ray cluster at {address} refused the request ({first}; RAY_AUTH_MODE is {mode}): "
                          f"{TOKEN_HELP}") from None
    except ConnectionError as e:
        raise RemoteError(f"cannot reach the Ray dashboard at {address}: {e}") from None


def client(address: str):
    """A `JobSubmissionClient`; Ray adds the bearer token itself when token auth is on."""
    from ray.job_submission import JobSubmissionClient

    with _errors(address):
        return JobSubmissionClient(address)


def stage(spec: dict[str, Any]) -> Path:
    """A temporary working_dir: the project in its installed layout (`layout.ROOTS`) plus `spec.yaml`."""
    root = Path(tempfile.mkdtemp(prefix="amctl-job-"))
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for module in layout.MODULES:
        shutil.copy2(layout.source(module), root / f"{module}.py")
    for name in layout.ROOTS:
        shutil.copytree(layout.source(name), root.joinpath(*name.split(".")), ignore=skip)
    (root / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root


def job_prefix(name: str) -> str:
    return f"amctl-{re.sub(r'[^a-z0-9_-]', '-', name.lower())}-"


def jobs_of(jobs: list, name: str) -> list:
    prefix = job_prefix(name)
    return [j for j in jobs if (j.submission_id or "").startswith(prefix) and j.submission_id[len(prefix):].isdigit()]


def submit(address: str, kind: str, name: str, spec: dict[str, Any], args: list[str]) -> str:
    """Submit `amctl launch KIND` for a validated spec; the id is `amctl-NAME-N`, so later commands find it by name."""
    c = client(address)
    with _errors(address):
        mine = jobs_of(c.list_jobs(), name)
        running = [j.submission_id for j in mine if _status(j) in ACTIVE]
        if running:
            raise RemoteError(f"{kind} {name} is already running on {address} as job {running[0]}; "
                              f"follow it with `amctl logs {running[0]} --follow` or stop it with `amctl cancel {name}`")
        job_id = f"{job_prefix(name)}{len(mine) + 1}"
        workdir = stage(spec)
        try:
            spec_arg = ["spec.yaml"] if kind == "sweep" else ["--spec", "spec.yaml"]
            # credentials stay out of the job's runtime env (Ray shows and logs it): the cluster must hold them
            env, withheld = split_secrets({k: os.environ[k] for k in JOB_ENV if os.environ.get(k)})
            env |= JOB_FLAGS | ({WITHHELD: json.dumps(withheld)} if withheld else {})
            c.submit_job(entrypoint=" ".join(["python", "amctl.py", "launch", kind, *spec_arg, *args]),
                         submission_id=job_id, runtime_env={"working_dir": str(workdir), "env_vars": env},
                         metadata={"amctl.kind": kind, "amctl.name": name})
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return job_id


def follow(address: str, job_id: str, write: Callable[[str], None]) -> None:
    """Stream the job's log to `write` until the job ends."""
    c = client(address)

    async def tail() -> None:
        async for chunk in c.tail_job_logs(job_id):
            write(chunk)

    with _errors(address):
        asyncio.run(tail())


@dataclass
class JobEnd:
    status: str  # SUCCEEDED | FAILED | STOPPED
    exit_code: int  # the entrypoint's (1 when Ray did not say)
    message: str


def outcome(address: str, job_id: str, wait_s: float = 30.0) -> JobEnd:
    """The job's terminal status and its entrypoint's exit code (the log stream can end a moment before the status)."""
    c = client(address)
    deadline = time.time() + wait_s
    with _errors(address):
        while True:
            info = c.get_job_info(job_id)
            status = _status(info)
            if status not in ACTIVE or time.time() > deadline:
                break
            time.sleep(0.5)
    code = info.driver_exit_code
    if code is None:
        found = re.search(r"exit code (-?\d+)", info.message or "")
        code = int(found.group(1)) if found else (0 if status == "SUCCEEDED" else 1)
    return JobEnd(status, code, info.message or "")


def jobs(address: str) -> list[dict[str, Any]]:
    c = client(address)
    with _errors(address):
        found = c.list_jobs()
    rows = [{"job": j.submission_id, "status": _status(j),
             "name": (j.metadata or {}).get("amctl.name"), "kind": (j.metadata or {}).get("amctl.kind"),
             "entrypoint": j.entrypoint, "start_time": j.start_time, "end_time": j.end_time, "message": j.message}
            for j in found if j.submission_id]  # submitted jobs; drivers that joined directly have no id
    return sorted(rows, key=lambda r: r["start_time"] or 0, reverse=True)


def logs(address: str, job_id: str) -> str:
    c = client(address)
    with _errors(address):
        known = {j.submission_id for j in c.list_jobs()}
        if job_id not in known:
            raise RemoteError(f"no job {job_id!r} on {address}; `amctl jobs --address {address}` lists them")
        return c.get_job_logs(job_id)


def cancel(address: str, name_or_job: str, wait_s: float = 90.0) -> tuple[str, str]:
    """Stop the running job for a sweep/run name (or a job id); wait until it has closed its records."""
    c = client(address)
    with _errors(address):
        all_jobs = c.list_jobs()
        active = [j for j in all_jobs if j.submission_id and _status(j) in ACTIVE]  # drivers that joined have no id
        match = [j for j in active if j.submission_id == name_or_job] or jobs_of(active, name_or_job)
        if not match:
            known = ", ".join(j.submission_id for j in active) or "none"
            raise RemoteError(f"no running job for {name_or_job!r} on {address}; running: {known}")
        job_id = match[0].submission_id
        c.stop_job(job_id)
    return job_id, outcome(address, job_id, wait_s).status
