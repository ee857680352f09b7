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
list_app = typer.Typer(help="List what amctl knows: mechanisms, tasks.", no_args_is_help=True)
app.add_typer(launch_app, name="launch")
app.add_typer(list_app, name="list")
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
        run_spec = validate_run(apply_overrides(data, set_ or []))
    except SpecError as e:
        raise bad_input(e.problems) from None

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
) -> None:
    """Sweeps and runs in the store, with their cells and trials."""
    from amlab.platform.settings import Settings
    from amlab.platform.store import Store

    store = Store(Settings.load().db_url)
    with store.session() as s:
        if name:
            sweep = store.sweep(s, name)
            if sweep is None:
                known = ", ".join(x.name for x in store.sweeps(s)[:20]) or "none yet"
                err.print(f"[red]error:[/] no sweep or run named {name!r}; known: {known}")
                raise typer.Exit(EXIT_BAD_INPUT)
            sweeps = [sweep]
        else:
            sweeps = store.sweeps(s)
        rows = [
            {"name": sw.name, "kind": sw.kind, "status": sw.status, "created_at": sw.created_at.isoformat(),
             "mlflow_run_id": sw.mlflow_run_id,
             "cells": [{"mechanism": c.mechanism, "task": c.task, "status": c.status, "config_hash": c.config_hash,
                        "trials": [{"key": t.trial_key, "seed": t.seed, "status": t.status, "steps_done": t.steps_done,
                                    "mlflow_run_id": t.mlflow_run_id} for t in c.trials]} for c in sw.cells]}
            for sw in sweeps
        ]
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    table = Table("name", "kind", "status", "cells", "trials done", "created", title="amctl status")
    for r in rows:
        trials = [t for c in r["cells"] for t in c["trials"]]
        done = sum(t["status"] == "FINISHED" for t in trials)
        table.add_row(r["name"], r["kind"], r["status"], str(len(r["cells"])), f"{done}/{len(trials)}", r["created_at"][:19])
    console.print(table)


@app.command("ui")
def ui(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="Open a browser tab.")] = False,
) -> None:
    """Serve the MLflow UI on loopback over amctl's tracking store (Ctrl-C stops it)."""
    import subprocess

    from amlab.platform.settings import Settings

    settings = Settings.load()
    url = f"http://127.0.0.1:{port}"
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
