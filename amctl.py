"""amctl: comparative experiments on attention and memory mechanisms (the command line).

Thin by design: parse, validate, call amlab.platform.  Exit codes:
0 success, 1 the work ran and failed, 2 bad input (nothing was started or
recorded), 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

__version__ = "0.1.0"

app = typer.Typer(help=__doc__.split("\n")[0], no_args_is_help=True, add_completion=False)
launch_app = typer.Typer(help="Launch training: one run, or a sweep.", no_args_is_help=True)
list_app = typer.Typer(help="List what amctl knows: mechanisms, tasks, presets.", no_args_is_help=True)
app.add_typer(launch_app, name="launch")
app.add_typer(list_app, name="list")
cluster_app = typer.Typer(help="Bring a Ray cluster up or down, or show it (wraps `ray up/down/status`).",
                          no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")
console = Console()
err = Console(stderr=True)

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130


def bad_input(problems: list[str]) -> typer.Exit:
    err.print("[bold red]error:[/] the spec was rejected; nothing was started or recorded.")
    for line in problems:
        err.print(f"  - {line}", highlight=False, markup=False, soft_wrap=True)
    return typer.Exit(EXIT_BAD_INPUT)


def version_callback(value: bool) -> None:
    if value:
        console.print(f"amctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """amctl: mechanism × task experiments on Ray, tracked in MLflow and a SQL store."""


@launch_app.command("run")
def launch_run(
    mechanism: Annotated[str | None, typer.Option("--mechanism", "-m", help="Mechanism name (amctl list mechanisms).")] = None,
    task: Annotated[str | None, typer.Option("--task", "-t", help="Task name (amctl list tasks).")] = None,
    spec: Annotated[Path | None, typer.Option("--spec", help="YAML run spec: mechanism, task, train sections.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override section.field=value, e.g. train.steps=50.")] = None,
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster address; default: embedded local Ray.")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Train again even if an identical run finished.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train one mechanism on one task (a one-trial Tune run), tracked in MLflow and the store."""
    from amlab.platform.spec import SpecError, apply_overrides, load_yaml, validate_run

    try:
        data: dict[str, Any] = load_yaml(spec) if spec else {}
        if mechanism:
            data["mechanism"] = {**(data.get("mechanism") or {}), "name": mechanism}
        if task:
            data["task"] = {**(data.get("task") or {}), "name": task}
        data = apply_overrides(data, set_ or [])
        run_spec = validate_run(data)
    except SpecError as e:
        raise bad_input(e.problems) from None
    from amlab.platform.launch import run_name
    from amlab.platform.remote import jobs_address

    if url := jobs_address(address):
        raise typer.Exit(_submit(url, "run", run_name(run_spec), data, ["--fresh"] * fresh + ["--json"] * as_json))

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from amlab.platform.launch import launch_run as run
    from amlab.platform.settings import Settings

    settings = Settings.load()
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err, disable=as_json, transient=False,
    )
    label = f"{run_spec.mechanism.name} × {run_spec.task.name}"
    bar = progress.add_task(label, total=run_spec.train.steps, info="starting Ray")

    def on_progress(step: int, total: int, result: dict[str, Any]) -> None:
        info = f"loss {result.get('train/loss', float('nan')):.4f}"
        progress.update(bar, completed=step, info=info)

    try:
        with progress:
            result = run(run_spec, settings, address=address, on_progress=on_progress, fresh=fresh)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted:[/] the run is marked KILLED; launch the same command to resume it.")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    summary = {"name": result.name, "status": result.status, "mlflow_run_id": result.mlflow_run_id,
               "reused": result.reused, "metrics": result.metrics}
    if as_json:
        print(json.dumps(summary, indent=1, default=str))
    else:
        from amlab.workloads.registry import TASKS

        metric = TASKS.get(run_spec.task.name).metric
        headline = {k: v for k, v in result.metrics.items() if k in ("train/loss", f"val/{metric}", f"test/{metric}")}
        shown = "  ".join(f"{k}={v:.4g}" for k, v in sorted(headline.items()) if isinstance(v, float))
        note = " (identical run already finished; --fresh trains again)" if result.reused else ""
        console.print(f"[bold]{result.status}[/] {result.name}{note}  {shown}", highlight=False)
        if "error" in result.metrics:
            console.print(f"[red]error:[/] {result.metrics['error']}", highlight=False)
        console.print(f"MLflow run id: {result.mlflow_run_id}   (browse: amctl ui)", highlight=False)
    if result.status != "FINISHED":
        raise typer.Exit(EXIT_FAILED)


def _sweep_data(spec: Path | None, preset_name: str | None, overrides: list[str]) -> dict[str, Any]:
    from amlab.platform.presets import preset
    from amlab.platform.spec import SpecError, apply_overrides, load_yaml

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


def _run_sweep(data: dict[str, Any], address: str | None, as_json: bool) -> None:
    from amlab.platform.spec import SpecError, validate_sweep

    try:
        spec, cells, notices = validate_sweep(data)
    except SpecError as e:
        raise bad_input(e.problems) from None
    for n in notices:
        err.print(f"[yellow]notice:[/] {n}", highlight=False)
    from amlab.platform.remote import jobs_address

    if url := jobs_address(address):
        raise typer.Exit(_submit(url, "sweep", spec.name, data, ["--json"] * as_json))

    from rich.live import Live

    from amlab.platform import console as views
    from amlab.platform.results import cell_results
    from amlab.platform.settings import Settings
    from amlab.platform.store import Store
    from amlab.platform.sweep import run_sweep

    settings = Settings.load()
    live: dict[str, Any] = {}

    def on_plan(pending, total, concurrency):
        live["view"] = views.SweepView(pending, total, concurrency)
        if not as_json:
            live["live"] = Live(live["view"], console=err, refresh_per_second=2)
            live["live"].start()

    def display(event, info):
        if "view" in live:
            live["view"].update(event, info)

    try:
        outcome = run_sweep(spec, cells, settings, address=address, display=display, on_plan=on_plan)
    finally:
        if "live" in live:
            live["live"].stop()
    results = cell_results(Store(settings.db_url), spec.name)
    if as_json:
        print(json.dumps({"name": outcome.name, "status": outcome.status, "mlflow_run_id": outcome.mlflow_run_id,
                          "concurrency": outcome.concurrency, "skipped": outcome.skipped, "cells": results},
                         indent=1, default=str))
    else:
        if outcome.skipped:
            console.print(f"skipped {len(outcome.skipped)} finished cell(s) (same config hash)")
        console.print(views.results_table(spec.name, results))
        console.print(f"[bold]{outcome.status}[/] sweep {outcome.name}   MLflow run id: {outcome.mlflow_run_id}", highlight=False)
        if outcome.status == "KILLED":
            console.print(f"resume with: amctl resume {outcome.name}")
    if outcome.status == "KILLED":
        raise typer.Exit(EXIT_INTERRUPTED)
    if outcome.status != "FINISHED":
        raise typer.Exit(EXIT_FAILED)


def _remote(fn, *args):
    """Call a platform.remote function; a problem the user can fix (address, token, name) is exit 2."""
    from amlab.platform.remote import RemoteError

    try:
        return fn(*args)
    except RemoteError as e:
        err.print(f"[red]error:[/] {e}", highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _submit(url: str, kind: str, name: str, data: dict[str, Any], args: list[str]) -> int:
    """Submit a validated launch as a Ray job, stream its log here, and return the job's exit code."""
    from amlab.platform import remote

    job = _remote(remote.submit, url, kind, name, data, args)
    err.print(f"submitted {kind} {name} to {url} as job [bold]{job}[/]; streaming its log "
              f"(Ctrl-C detaches; `amctl cancel {name}` stops it)", highlight=False)
    try:
        _remote(remote.follow, url, job, lambda chunk: (sys.stdout.write(chunk), sys.stdout.flush()))
    except KeyboardInterrupt:
        err.print(f"detached; job {job} keeps running: amctl logs {job} --follow", highlight=False)
        return EXIT_INTERRUPTED
    end = _remote(remote.outcome, url, job)
    err.print(f"job {job}: {end.status}" + (f" (exit code {end.exit_code})" if end.exit_code else ""), highlight=False)
    return 0 if end.status == "SUCCEEDED" else EXIT_INTERRUPTED if end.status == "STOPPED" else (end.exit_code or EXIT_FAILED)


@launch_app.command("sweep")
def launch_sweep(
    spec: Annotated[Path | None, typer.Argument(help="YAML sweep spec; omitted: the built-in quick study.")] = None,
    preset_name: Annotated[str | None, typer.Option("--preset", help="A built-in study (amctl list presets).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a spec field, e.g. train.steps=200.")] = None,
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster address; default: embedded local Ray.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Run a mechanism × task grid: Optuna search per cell on Ray Tune with ASHA, then every seed.

    Launching the same spec again skips finished cells and resumes unfinished ones.
    """
    from amlab.platform.spec import SpecError

    try:
        data = _sweep_data(spec, preset_name, set_ or [])
    except SpecError as e:
        raise bad_input(e.problems) from None
    _run_sweep(data, address, as_json)


@app.command("resume")
def resume(
    name: Annotated[str, typer.Argument(help="Sweep name.")],
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster address.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Resume an interrupted sweep from its recorded spec (finished cells are not rerun)."""
    _run_sweep(_recorded_spec(name), address, as_json)


def _recorded_spec(name: str) -> dict[str, Any]:
    from amlab.platform.settings import Settings
    from amlab.platform.store import Store

    store = Store(Settings.load().db_url)
    with store.session() as s:
        sweep = store.sweep(s, name)
        if sweep is None or sweep.kind != "sweep":
            known = ", ".join(x.name for x in store.sweeps(s) if x.kind == "sweep") or "none yet"
            err.print(f"[red]error:[/] no sweep named {name!r}; known: {known}")
            raise typer.Exit(EXIT_BAD_INPUT)
        return dict(sweep.spec)


@app.command("cancel")
def cancel(
    name: Annotated[str, typer.Argument(help="Sweep name; with a cluster address also a run name or a job id.")],
    address: Annotated[str | None, typer.Option("--address", help="Ray dashboard URL (http://HEAD:8265).")] = None,
) -> None:
    """Stop a running sweep: its driver stops the trials, marks them KILLED, and the sweep stays resumable."""
    from amlab.platform import remote
    from amlab.platform.settings import Settings
    from amlab.platform.store import Store

    if url := remote.jobs_address(address):
        job, final = _remote(remote.cancel, url, name)
        console.print(f"job {job}: {final}", highlight=False)
        return
    _recorded_spec(name)
    store = Store(Settings.load().db_url)
    with store.session() as s:
        sweep = store.sweep(s, name)
        if sweep.status != "RUNNING":
            console.print(f"sweep {name} is {sweep.status}; nothing to cancel")
            return
        store.set_status(s, sweep, "CANCELLING")
        s.commit()
    console.print(f"sweep {name}: cancel requested; its driver stops within a few seconds")


def _jobs_url(address: str | None) -> str:
    from amlab.platform.remote import jobs_address

    url = jobs_address(address)
    if url is None:
        err.print("[red]error:[/] no cluster: give --address http://HEAD:8265 or set RAY_ADDRESS to the dashboard URL")
        raise typer.Exit(EXIT_BAD_INPUT)
    return url


@app.command("jobs")
def jobs(
    address: Annotated[str | None, typer.Option("--address", help="Ray dashboard URL; default: RAY_ADDRESS.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Jobs on a Ray cluster (newest first): amctl launches carry their sweep or run name."""
    from amlab.platform import remote

    rows = _remote(remote.jobs, _jobs_url(address))
    if as_json:
        print(json.dumps(rows, indent=1, default=str))
        return
    table = Table("job", "status", "kind", "name", "entrypoint", title="Ray jobs")
    for r in rows:
        table.add_row(r["job"] or "-", r["status"], r["kind"] or "-", r["name"] or "-", r["entrypoint"])
    console.print(table)


@app.command("logs")
def logs(
    job: Annotated[str, typer.Argument(help="Job id (amctl jobs).")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming until the job ends.")] = False,
    address: Annotated[str | None, typer.Option("--address", help="Ray dashboard URL; default: RAY_ADDRESS.")] = None,
) -> None:
    """A Ray job's log (driver output), whole or followed."""
    from amlab.platform import remote

    url = _jobs_url(address)
    text = _remote(remote.logs, url, job)
    if not follow:
        sys.stdout.write(text)
        return
    try:
        _remote(remote.follow, url, job, lambda chunk: (sys.stdout.write(chunk), sys.stdout.flush()))
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None


@app.command("report")
def report(
    name: Annotated[str, typer.Argument(help="Sweep name.")],
    fmt: Annotated[str | None, typer.Option("--format", help="html|md|csv|json (default: a table; all with --out).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write report.<format> into this folder.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Cell results as JSON on stdout (same as --format json).")] = False,
) -> None:
    """The comparison report: leaderboard with 95 % intervals, ties, chance, fairness, cost, curves, heatmaps, paper vs ours.

    md, csv and json print to stdout unless --out is given; html is always written to a file (default
    $AMCTL_HOME/reports/NAME/report.html).
    """
    from amlab.platform import console as views
    from amlab.platform import report as rep
    from amlab.platform.results import UnknownSweep
    from amlab.platform.settings import Settings

    if fmt is not None and fmt not in rep.FORMATS:
        err.print(f"[red]error:[/] --format {fmt!r}; valid: {', '.join(rep.FORMATS)}")
        raise typer.Exit(EXIT_BAD_INPUT)
    fmt = "json" if as_json else fmt
    settings = Settings.load()
    try:
        if out is not None or fmt == "html":
            folder = out or settings.home / "reports" / name
            for path in rep.write(settings, name, folder, (fmt,) if fmt else rep.FORMATS):
                console.print(str(path), highlight=False, soft_wrap=True)
            return
        data = rep.collect(settings, name)
    except UnknownSweep as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if fmt is None:
        console.print(views.results_table(name, data["cells"]))
        for line in data["summary"]:
            console.print(f"- {line}", highlight=False)
        console.print(f"full report: amctl report {name} --format html", highlight=False)
    else:
        print({"json": lambda: rep.render_json(data["cells"]), "md": lambda: rep.render_md(data),
               "csv": lambda: rep.render_csv(data)}[fmt](), end="" if fmt == "csv" else "\n")


@app.command("compare")
def compare(
    a: Annotated[str, typer.Argument(help="First sweep.")],
    b: Annotated[str, typer.Argument(help="Second sweep.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Two sweeps side by side: every mechanism × task cell of either, with intervals and the difference B - A."""
    from amlab.platform.report import compare as side_by_side
    from amlab.platform.report import fmt
    from amlab.platform.results import UnknownSweep
    from amlab.platform.settings import Settings
    from amlab.platform.store import Store

    try:
        rows = side_by_side(Store(Settings.load().db_url), a, b)
    except UnknownSweep as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if as_json:
        print(json.dumps(rows, indent=1, default=str))
        return
    table = Table("mechanism", "task", "metric", a, b, f"{b} - {a}", "intervals", title=f"{a} vs {b}")
    for r in rows:
        diff = "-" if r["difference"] is None else f"{r['difference']:+.4g}"
        overlap = {None: "-", True: "overlap (tie)", False: "separate"}[r["overlap"]]
        table.add_row(r["mechanism"], r["task"], f"{r['metric']} {'↑' if r['higher_is_better'] else '↓'}",
                      fmt(r["a"], r["metric"], r["a_ci"]), fmt(r["b"], r["metric"], r["b_ci"]), diff, overlap)
    console.print(table)


@list_app.command("presets")
def list_presets(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Built-in studies: the quick study and sweeps that mirror papers, with what each paper predicts."""
    from amlab.platform.presets import PRESETS

    rows = [{"name": n, "predicts": p["predicts"], "spec": p["spec"]} for n, p in PRESETS.items()]
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    table = Table("name", "mechanisms × tasks", "the paper predicts", title="presets")
    for r in rows:
        grid = f"{', '.join(r['spec']['mechanisms'])} × {', '.join(r['spec']['tasks'])}"
        table.add_row(r["name"], grid, r["predicts"])
    console.print(table)


def _registry_rows(kind: str) -> list[dict[str, Any]]:
    from amlab.workloads.registry import MECHANISMS, TASKS

    return [e.describe() for e in (MECHANISMS if kind == "mechanisms" else TASKS)]


@list_app.command("mechanisms")
def list_mechanisms(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Mechanisms: family, accepted task modalities, knobs with defaults and ranges, paper."""
    rows = _registry_rows("mechanisms")
    if as_json:
        print(json.dumps(rows, indent=1, default=str))
        return
    table = Table("name", "family", "modalities", "knobs (default)", "paper", title="mechanisms")
    for r in rows:
        knobs = ", ".join(f"{k}={v['default']}" for k, v in r["params"].items())
        table.add_row(r["name"], r["family"], ",".join(r["modalities"]), knobs, r["paper"])
    console.print(table)


@list_app.command("tasks")
def list_tasks(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Tasks: modality, loss, headline metric, knobs with defaults and ranges."""
    rows = _registry_rows("tasks")
    if as_json:
        print(json.dumps(rows, indent=1, default=str))
        return
    table = Table("name", "modality", "loss", "metric", "knobs (default)", title="tasks")
    for r in rows:
        knobs = ", ".join(f"{k}={v['default']}" for k, v in r["params"].items())
        arrow = "↑" if r["higher_is_better"] else "↓"
        table.add_row(r["name"], r["modality"], r["loss"], f"{r['metric']} {arrow}", knobs)
    console.print(table)


@app.command("status")
def status(
    name: Annotated[str | None, typer.Argument(help="A sweep or run name; all when omitted.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Keep the table live until the sweep ends.")] = False,
) -> None:
    """Sweeps and runs in the store; with NAME, its cells and trials with progress."""
    from amlab.platform import console as views
    from amlab.platform.results import UnknownSweep
    from amlab.platform.settings import Settings
    from amlab.platform.store import Store

    store = Store(Settings.load().db_url)
    try:
        rows = views.status_rows(store, name)
    except UnknownSweep as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    if not watch:
        console.print(views.status_table(rows, name))
        return
    import time

    from rich.live import Live

    with Live(views.status_table(rows, name), console=console, refresh_per_second=1) as live:
        while any(r["status"] in ("PENDING", "RUNNING", "CANCELLING") for r in rows):
            time.sleep(2)
            rows = views.status_rows(store, name)
            live.update(views.status_table(rows, name))


@app.command("ui")
def ui(
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default 5000; 8080 with --optuna).")] = None,
    optuna_ui: Annotated[bool, typer.Option("--optuna", help="Serve optuna-dashboard over the cells' studies instead.")] = False,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="Open a browser tab.")] = False,
) -> None:
    """Serve the MLflow UI (or optuna-dashboard) on loopback over amctl's stores (Ctrl-C stops it)."""
    import subprocess

    from amlab.platform.settings import Settings

    settings = Settings.load()
    port = port or (8080 if optuna_ui else 5000)
    url = f"http://127.0.0.1:{port}"
    if optuna_ui:
        dashboard = Path(sys.executable).with_name("optuna-dashboard")
        cmd = [str(dashboard), "--host", "127.0.0.1", "--port", str(port), settings.optuna_url]
        console.print(f"optuna-dashboard: {url}  (studies: {settings.optuna_url}, one per cell: SWEEP:CELL)", highlight=False)
    else:
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", settings.mlflow_uri, "--default-artifact-root", settings.artifacts, "--workers", "1"]
        console.print(f"MLflow UI: {url}  (store: {settings.mlflow_uri})", highlight=False)
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        raise typer.Exit(subprocess.call(cmd))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


ClusterConfig = Annotated[Path, typer.Argument(help="Cluster-launcher YAML, e.g. cluster/aws.yaml.")]


def _ray_cli(config: Path, *args: str) -> None:
    """Check the config as `ray up` would (exit 2 on a problem, before any cloud call), then run the Ray CLI."""
    import subprocess

    from amlab.platform.cluster_config import check

    problems = check(config)
    if problems:
        err.print("[bold red]error:[/] the cluster config was rejected; nothing was started.")
        for p in problems:
            err.print(f"  - {p}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    raise typer.Exit(subprocess.call([sys.executable, "-m", "ray.scripts.scripts", *args]))


@cluster_app.command("up")
def cluster_up(config: ClusterConfig) -> None:
    """Start (or update) the cluster: `ray up -y CONFIG`; then `ray dashboard CONFIG` forwards port 8265."""
    _ray_cli(config, "up", "-y", str(config))


@cluster_app.command("down")
def cluster_down(config: ClusterConfig) -> None:
    """Tear the cluster down: `ray down -y CONFIG`."""
    _ray_cli(config, "down", "-y", str(config))


@cluster_app.command("status")
def cluster_status(config: ClusterConfig) -> None:
    """Nodes, resources and pending demand: `ray status` run on the head (`ray exec CONFIG "ray status"`)."""
    _ray_cli(config, "exec", str(config), "ray status")


@app.command("server")
def server(
    port: Annotated[int, typer.Option(help="Port.")] = 5000,
    host: Annotated[str, typer.Option(help="Interface; 0.0.0.0 serves the cluster (put it behind auth).")] = "127.0.0.1",
    backend: Annotated[str | None, typer.Option(help="MLflow backend store; default: MLFLOW_TRACKING_URI's database.")] = None,
    artifacts: Annotated[str | None, typer.Option(help="Artifact root: s3://, gs://, a folder; default AMCTL_ARTIFACTS.")] = None,
    workers: Annotated[int, typer.Option(help="Server worker processes.")] = 2,
) -> None:
    """Run the MLflow tracking server the cluster logs to: PostgreSQL backend, artifacts proxied to S3/GCS."""
    import subprocess

    from amlab.platform.settings import Settings

    settings = Settings.load()
    store = backend or settings.mlflow_uri
    if store.startswith(("http://", "https://")):
        err.print(f"[red]error:[/] MLFLOW_TRACKING_URI is a server ({store}); give --backend postgresql://.../mlflow")
        raise typer.Exit(EXIT_BAD_INPUT)
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", str(workers),
           "--backend-store-uri", store, "--serve-artifacts", "--artifacts-destination", artifacts or settings.artifacts]
    console.print(f"MLflow server: http://{host}:{port}  (backend: {_redact(store)}); clients set "
                  f"MLFLOW_TRACKING_URI=http://{host}:{port}", highlight=False)
    try:
        raise typer.Exit(subprocess.call(cmd))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a database URL (a path, an http URL): nothing secret in it
        return url


def main() -> None:
    app()


if __name__ == "__main__":
    main()
