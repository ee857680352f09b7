"""The platform facade: every command of the CLI as a function that validates, acts and returns plain data.

The CLI parses arguments, calls one of these and renders what comes back.
Problems a person can fix are `errors.BadInput` (exit 2), raised before any
work starts.  Nothing here imports the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amlab.platform import errors, lease
from amlab.platform.errors import BadInput, SweepActive
from amlab.platform.launch import Launch
from amlab.platform.settings import Settings, local_artifacts, redact
from amlab.platform.spec import SpecError, apply_overrides, load_yaml, validate_run
from amlab.platform.status import Kind, Status, study_name
from amlab.platform.store import Store, Transition
from amlab.platform.sweep_spec import validate_sweep


def settings() -> Settings:
    return Settings.load()


def store() -> Store:
    return Store(settings().db_url)


# -- what to launch --------------------------------------------------------------------------------

def sweep_data(spec: Path | None, preset_name: str | None, overrides: list[str]) -> dict[str, Any]:
    """The sweep spec as data: a YAML file or a preset (default: the quick study), with `--set` overrides."""
    from amlab.platform.presets import preset

    if spec and preset_name:
        raise SpecError(["give a spec file or --preset, not both"])
    if spec:
        data = load_yaml(spec)
    else:
        try:
            data = json.loads(json.dumps(preset(preset_name or "quick")["spec"]))
        except KeyError as e:
            raise SpecError([f"--preset: {e.args[0]}"]) from None
    return apply_overrides(data, overrides)


def run_data(spec: Path | None, mechanism: str | None, task: str | None, overrides: list[str]) -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(spec) if spec else {}
    for section, name in (("mechanism", mechanism), ("task", task)):
        current = data.get(section)
        if name and (current is None or isinstance(current, dict)):  # anything else is reported by validation
            data[section] = {**(current or {}), "name": name}
    return apply_overrides(data, overrides)


def plan(kind: Kind, data: dict[str, Any]) -> Launch:
    """Validate a spec completely (SpecError lists every problem) and expand it into cells."""
    return Launch.of_run(validate_run(data)) if kind is Kind.RUN else Launch.of_sweep(*validate_sweep(data))


def recorded(name: str) -> tuple[Launch, dict[str, Any]]:
    """The launch a sweep or run was recorded with (what `resume` runs again), and its spec data."""
    with (st := store()).session() as s:
        row = st.named(s, name)
        kind, data = Kind(row.kind), dict(row.spec)
    return plan(kind, data), data


def launch(lch: Launch, *, address: str | None = None, fresh: bool = False, extend: bool = False, display=None,
           on_plan=None):
    """Run a launch on the local or joined Ray cluster; `fresh` first deletes what an earlier launch recorded."""
    from amlab.platform import ray_runtime, resources

    resources.check_local_devices(lch.resources.gpus_per_worker, address)
    errors.hold_interrupts()  # until run_sweep can close what it records
    try:
        ray_runtime.start_ray(stores := settings(), address)  # it starts while the imports below and the stores open
        from amlab.platform.sweep import run_sweep

        if fresh and exists(lch.name):
            delete(lch.name)
        return run_sweep(lch, stores, address=address, extend=extend, display=display, on_plan=on_plan,
                         release_ray=errors.ends_with_command())  # the CLI: nothing after this launch needs Ray
    finally:
        errors.release_interrupts(raise_held=False)  # an error before run_sweep released them is already raised


def submit(lch: Launch, data: dict[str, Any], url: str, args: list[str], write: Callable[[str], None],
           note: Callable[[str], None]):
    """Submit a validated launch as a Ray job, `note` its id, stream its log to `write`; returns (job id, JobEnd)."""
    from amlab.platform import remote

    job = remote.submit(url, lch.kind.value, lch.name, data, args)
    note(f"submitted {lch.kind.value} {lch.name} to {url} as job {job} (Ctrl-C detaches; `amctl cancel {lch.name}` stops it)")
    remote.follow(url, job, write)
    return job, remote.outcome(url, job)


def exists(name: str) -> bool:
    with (st := store()).session() as s:
        return st.sweep(s, name) is not None


# -- reading ---------------------------------------------------------------------------------------

def results(name: str) -> list[dict[str, Any]]:
    from amlab.platform.results import cell_results

    return cell_results(store(), name)


def status(name: str | None) -> list[dict[str, Any]]:
    from amlab.platform.views import status_rows

    return status_rows(store(), name)


def trial_metrics(name: str) -> dict[str, Any]:
    from amlab.platform.sweep import trial_metrics

    return trial_metrics(settings(), name)


def report_data(name: str) -> dict[str, Any]:
    from amlab.platform import report

    return report.collect(settings(), name)


def render_report(name: str, fmt: str) -> str:
    """The report as md, csv or json text."""
    from amlab.platform import report

    data = report.collect(settings(), name)
    return {"json": lambda: report.render_json(data["cells"]), "md": lambda: report.render_md(data),
            "csv": lambda: report.render_csv(data)}[fmt]()


def write_report(name: str, folder: Path | None, fmt: str | None) -> list[Path]:
    """Write the report (one format, or all) into `folder` (default $AMCTL_HOME/reports/NAME)."""
    from amlab.platform import report

    cfg = settings()
    return report.write(cfg, name, folder or cfg.home / "reports" / name, (fmt,) if fmt else report.FORMATS)


def compare(a: str, b: str) -> list[dict[str, Any]]:
    from amlab.platform import report

    return report.compare(store(), a, b)


def names(kind: str) -> list[str]:
    """Names for shell completion: sweeps, presets, mechanisms or tasks; none on any failure (it runs in the shell)."""
    try:
        if kind == "sweeps":
            with (st := store()).session() as s:
                return [x.name for x in st.sweeps(s)]
        return [r["name"] for r in listing(kind)]
    except Exception:
        return []


def listing(kind: str) -> list[dict[str, Any]]:
    """`amctl list`: the registry entries (mechanisms, tasks) or the presets, as plain data."""
    if kind == "presets":
        from amlab.platform.presets import PRESETS

        return [{"name": n, "predicts": p["predicts"], "spec": p["spec"]} for n, p in PRESETS.items()]
    from amlab.workloads.registry import MECHANISMS, TASKS

    return [e.describe() for e in (MECHANISMS if kind == "mechanisms" else TASKS)]


def serve(cmd: list[str], log: Path | None = None, open_url: str | None = None) -> int:
    """Run a server in the foreground (its request log to `log`, not the terminal) until it exits or Ctrl-C;
    `open_url` is opened in a browser tab once the server has started."""
    import contextlib
    import subprocess
    import webbrowser

    with open(log, "a") if log else contextlib.nullcontext() as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT if sink else None)
        try:
            if open_url:
                webbrowser.open(open_url)
            return proc.wait()
        except KeyboardInterrupt:
            proc.wait()  # the server got the same Ctrl-C (one process group) and stops by itself
            return 0


# -- changing --------------------------------------------------------------------------------------

def cancel(name: str, address: str | None = None) -> str:
    """Flag a running sweep (or run) for cancellation: its driver stops the trials within seconds and marks it KILLED.

    With a cluster's dashboard address, stop its Ray job instead (by sweep name or job id) and wait for its end.
    """
    from amlab.platform import remote

    if url := remote.jobs_address(address):
        job, final = remote.cancel(url, name)
        return f"job {job}: {final}"
    with (st := store()).session() as s:
        row = st.named(s, name)
        if row.status != Status.RUNNING:
            return f"{name} is {row.status}; nothing to cancel"
        if lease.liveness(row) is lease.Liveness.GONE:
            return (f"{name} is {lease.INTERRUPTED}: its driver is gone, nothing runs; `amctl resume {name}` "
                    f"continues it, `amctl delete {name}` removes it")
        row.cancel_requested = True
        s.commit()
    return f"{name}: cancel requested; its driver stops the trials within seconds and marks them KILLED"


@dataclass
class Deletion:
    name: str
    mlflow_runs: list[str] = field(default_factory=list)
    studies: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    store_rows: int = 0
    done: bool = False


def delete(name: str, *, dry_run: bool = False) -> Deletion:
    """Remove a sweep from all four stores (SQL, MLflow runs and artifacts, Optuna studies, Tune folder)."""
    import optuna

    from amlab.platform import storage, studies, tracking
    from amlab.platform.sweep import tune_storage

    cfg, st = settings(), store()
    with st.session() as s:
        row = st.named(s, name)
        if row.status == Status.RUNNING and lease.liveness(row) is not lease.Liveness.GONE:
            raise SweepActive(f"{row.kind} {name} is RUNNING; `amctl cancel {name}` it first, then delete it")
        cells = list(row.cells)
        trials = [t for c in cells for t in c.trials]
        out = Deletion(name, store_rows=1 + len(cells) + len(trials))
        out.mlflow_runs = list(dict.fromkeys(r for r in [row.mlflow_run_id, *(c.mlflow_run_id for c in cells),
                                                         *(t.mlflow_run_id for t in trials)] if r))
        if row.kind == Kind.SWEEP:
            out.studies = [study_name(name, c.key) for c in cells]
        out.folders = [p for p in (tune_storage(cfg, name), str(cfg.home / "reports" / name)) if storage.exists(p)]
        if dry_run:
            return out
        entities = [("sweep", row.id), *(("cell", c.id) for c in cells), *(("trial", t.id) for t in trials)]
        for entity, entity_id in entities:
            s.query(Transition).filter(Transition.entity == entity, Transition.entity_id == entity_id).delete()
        s.delete(row)
        s.commit()
    tracking.hard_delete_runs(tracking.client(cfg), out.mlflow_runs)
    for study in out.studies:
        try:
            optuna.delete_study(study_name=study, storage=studies.storage(cfg.optuna_url))
        except KeyError:
            pass  # never created (the cell was recorded by a driver that died before its study)
    for folder in out.folders:
        storage.remove(folder)
    out.done = True
    return out


# -- serving ---------------------------------------------------------------------------------------

ML_VIEW = "workflowType=machine_learning"  # MLflow 3's UI opens in its GenAI view unless the URL (or the browser) says


def ui_command(port: int | None, optuna_ui: bool, name: str | None = None) -> tuple[list[str], str, Path]:
    """The MLflow UI (or optuna-dashboard) on loopback over amctl's stores: (command, url to open, log file)."""
    cfg = settings()
    port = port or (8080 if optuna_ui else 5000)
    base = f"http://127.0.0.1:{port}"
    if optuna_ui:
        if shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) is None:
            raise BadInput("amctl ui --optuna needs optuna-dashboard, the [ui] extra: pip install 'amctl[ui]'")
        cmd, url = [str(Path(sys.executable).with_name("optuna-dashboard")), "--host", "127.0.0.1", "--port", str(port),
                    cfg.optuna_url], base
    else:
        url = f"{base}/#/experiments/{exp}/runs?{ML_VIEW}" if (exp := _experiment_of(cfg, name)) else \
            f"{base}/#/experiments?{ML_VIEW}"
        backend_by_env(cfg.mlflow_uri)
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--default-artifact-root", cfg.artifacts or local_artifacts(cfg.home), "--workers", "1"]
    (cfg.home / "logs").mkdir(exist_ok=True)
    return cmd, url, cfg.home / "logs" / ("optuna-dashboard.log" if optuna_ui else "mlflow-ui.log")


def _experiment_of(cfg: Settings, name: str | None) -> str | None:
    """The MLflow experiment of the named sweep or run (default: the latest launched); None when there is none."""
    from amlab.platform import tracking

    db = Store(cfg.db_url)
    with db.session() as s:
        rows = [db.named(s, name)] if name else db.sweeps(s)[:1]
        run_id = rows[0].mlflow_run_id if rows else None
    return tracking.client(cfg).get_run(run_id).info.experiment_id if run_id else None


def server_command(port: int, host: str, backend: str | None, artifacts: str | None, workers: int) -> list[str]:
    """The MLflow tracking server a cluster logs to: a SQL backend, artifacts proxied to S3/GCS or a folder."""
    cfg = settings()
    backend = backend or os.environ.get("MLFLOW_BACKEND_STORE_URI") or cfg.mlflow_uri
    if backend.startswith(("http://", "https://")):
        raise BadInput(f"MLFLOW_TRACKING_URI is a server ({redact(backend)}); give --backend postgresql://.../mlflow")
    destination = artifacts or cfg.artifacts or local_artifacts(cfg.home)
    if destination.startswith("mlflow-artifacts:"):
        raise BadInput(f"AMCTL_ARTIFACTS is {destination}, the clients' view of this server; give --artifacts s3://... "
                       "(or gs://, a folder): where the server keeps them")
    backend_by_env(backend)
    return [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", str(workers),
            "--serve-artifacts", "--artifacts-destination", destination]


def backend_by_env(uri: str) -> None:
    """The server's database URL goes to it in the environment (MLflow's MLFLOW_BACKEND_STORE_URI), not on its
    command line, where every user of the machine could read a password in `ps`."""
    os.environ["MLFLOW_BACKEND_STORE_URI"] = uri


def local_cluster(action: str, note: Callable[[str], None], app: str) -> int:
    """`amctl cluster up|down|status` with no config: the warm local Ray head, and its driver that runs `app`."""
    from amlab.platform import local_cluster

    return local_cluster.act(settings(), action, note, app)


def cluster_command(action: str, config: Path) -> list[str]:
    """`ray up/down` or `ray status` on the head for a cluster-launcher YAML, checked as `ray up` would (BadInput)."""
    from amlab.platform.cluster_config import check

    problems = check(config)
    if problems:
        raise BadInput("the cluster config was rejected; nothing was started", problems)
    args = {"up": ["up", "-y", str(config)], "down": ["down", "-y", str(config)], "status": ["exec", str(config), "ray status"]}
    return [sys.executable, "-m", "ray.scripts.scripts", *args[action]]
