"""amctl: comparative experiments on attention and memory mechanisms (the command line).

Thin by design: parse, call amlab.platform.api, render with amlab.platform.views.  Exit codes: 0 success,
1 the work ran and failed (or amctl hit a bug), 2 bad input (nothing was started or recorded), 130 interrupted or cancelled.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.text import Text

from amlab.platform.errors import AmctlError, run_then_exit, unexpected
from amlab.platform.status import Kind, Status

__version__ = "0.1.0"


class _Lazy:
    """A platform module imported on first use, so that `--help` and completion never pay for torch and Ray."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)


api, remote, views = (_Lazy(f"amlab.platform.{m}") for m in ("api", "remote", "views"))
write = functools.partial(print, end="", flush=True)  # a job's log, streamed as it comes
EXIT_FAILED, EXIT_INTERRUPTED = 1, 130
CTX = {"help_option_names": ["-h", "--help"]}
LAUNCH, RESULTS, MANAGE, CLUSTER = "Launch", "Results", "Manage", "Cluster"
OPTIONS = {"debug": False}  # root()'s, set on every invocation, for the commands


class _Group(typer.core.TyperGroup):
    def list_commands(self, ctx) -> list[str]:  # `launch` heads its help panel, before resume and cancel
        return sorted(super().list_commands(ctx), key=lambda name: name != "launch")


# a flag takes no value, so show none (Typer prints "<bool>" beside every flag, --help included)
_shown_type = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else _shown_type(self, ctx)
app = typer.Typer(help=__doc__.split("\n")[0], no_args_is_help=True, context_settings=CTX, cls=_Group)
launch_app = typer.Typer(help="Launch training: one run, or a sweep.", no_args_is_help=True, context_settings=CTX)
app.add_typer(launch_app, name="launch", rich_help_panel=LAUNCH)


def out(stderr: bool = False) -> Console:
    """A console that never cuts a table when piped: one line per row, whatever the width, so grep finds names."""
    return Console(stderr=stderr, width=None if (sys.stderr if stderr else sys.stdout).isatty() else 10_000, highlight=False)


def command(group: typer.Typer, name: str, panel: str | None = None):
    """Register a command; the one place where errors become a clean message (soft-wrapped: paths stay whole) and an exit code."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (typer.Exit, typer.Abort, typer.TyperException):
                raise  # typer's own: an exit code, a usage error
            except KeyboardInterrupt:
                out(True).print("interrupted")
                raise typer.Exit(EXIT_INTERRUPTED) from None
            except Exception as e:  # an AmctlError's message and exit code; anything else is a bug (see `unexpected`)
                said, code = (str(e), e.exit_code) if isinstance(e, AmctlError) else (
                    unexpected(f"amctl {'launch ' * (group is launch_app)}{name}", e, OPTIONS["debug"]), EXIT_FAILED)
                out(True).print(Text.assemble(("error: ", "bold red"), said), soft_wrap=True)
                raise typer.Exit(code) from None
        return group.command(name, rich_help_panel=panel)(run)
    return wrap


def complete(kind: str):
    """Shell completion of sweep, preset, mechanism or task names (from the store and the registries)."""
    return lambda incomplete: [n for n in api.names(kind) if n.startswith(incomplete)]


def emit(as_json: bool, data: Any, view) -> None:
    """JSON on stdout for machines, else the view (a Rich renderable built from the same data)."""
    print(json.dumps(data, indent=1, default=str)) if as_json else out().print(view())


Address = Annotated[str | None, typer.Option("--address", envvar="RAY_ADDRESS", show_envvar=True,
                                             help="Ray GCS host:port or dashboard http://HEAD:8265; default: local Ray.")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
Sets = Annotated[list[str] | None, typer.Option("--set", help="Override a spec field, e.g. train.steps=200 (repeatable).")]
SweepName = Annotated[str, typer.Argument(help="Sweep or run name (amctl status).", autocompletion=complete("sweeps"))]


def _version(value: bool) -> None:
    if value:
        print(f"amctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
    home: Annotated[Path | None, typer.Option("--home", envvar="AMCTL_HOME", show_envvar=True,
                                              help="Folder of the embedded stores (default ~/.amctl).")] = None,
    debug: Annotated[bool, typer.Option("--debug", envvar="AMCTL_DEBUG", help="Print a bug's traceback, not one line.")] = False,
) -> None:
    """amctl: mechanism × task experiments on Ray, tracked in MLflow and a SQL store."""
    OPTIONS["debug"] = debug
    if home is not None:
        os.environ["AMCTL_HOME"] = str(home)


def _launch(kind: Kind, data: dict[str, Any], address: str | None, as_json: bool, fresh: bool = False, extend: bool = False):
    """Validate, then run here (live view) or submit to the cluster's Jobs API; exit with the outcome."""
    lch = api.plan(kind, data)
    for notice in lch.notices:
        out(True).print(Text(f"notice: {notice}", style="yellow"))
    if url := remote.jobs_address(address):
        args = ["--fresh"] * fresh + ["--extend"] * extend + ["--json"] * as_json
        job, end = api.submit(lch, data, url, args, write, lambda note: out(True).print(Text(note)))
        out(True).print(f"job {job}: {end.status}" + (f" (exit code {end.exit_code})" if end.exit_code else ""))
        raise typer.Exit(0 if end.status == "SUCCEEDED" else EXIT_INTERRUPTED if end.status == "STOPPED" else end.exit_code or 1)
    with views.LiveLaunch(kind, lch, out(True), quiet=as_json) as live:
        outcome = api.launch(lch, address=address, fresh=fresh, extend=extend, display=live.update, on_plan=live.plan)
    summary = views.outcome_data(outcome, api.trial_metrics(lch.name) if kind is Kind.RUN else api.results(lch.name))
    report = api.report_data(lch.name) if kind is Kind.SWEEP and not as_json else None
    print(json.dumps(summary, indent=1, default=str)) if as_json else views.render_outcome(out(), outcome, summary, report)
    raise typer.Exit({Status.FINISHED: 0, Status.KILLED: EXIT_INTERRUPTED}.get(outcome.status, EXIT_FAILED))


@command(launch_app, "run")
def launch_run(
    mechanism: Annotated[str | None, typer.Option("-m", "--mechanism", autocompletion=complete("mechanisms"))] = None,
    task: Annotated[str | None, typer.Option("-t", "--task", autocompletion=complete("tasks"))] = None,
    spec: Annotated[Path | None, typer.Option("--spec", help="YAML run spec: mechanism, task, train sections.")] = None,
    set_: Sets = None,
    address: Address = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Delete what an identical earlier run recorded; train again.")] = False,
    as_json: Json = False,
) -> None:
    """Train one mechanism on one task: a one-cell, one-trial sweep, tracked in MLflow and the store."""
    _launch(Kind.RUN, api.run_data(spec, mechanism, task, set_ or []), address, as_json, fresh=fresh)


@command(launch_app, "sweep")
def launch_sweep(
    spec: Annotated[Path | None, typer.Argument(help="YAML sweep spec; omitted: the built-in quick study.")] = None,
    preset: Annotated[str | None, typer.Option("--preset", help="A built-in study.", autocompletion=complete("presets"))] = None,
    set_: Sets = None,
    address: Address = None,
    extend: Annotated[bool, typer.Option("--extend", help="Add this spec's new cells to the sweep of that name.")] = False,
    as_json: Json = False,
) -> None:
    """Run a mechanism × task grid: Optuna search per cell on Ray Tune with ASHA, then every seed.

    The same spec again skips finished cells; a changed spec under the same name is refused unless --extend.
    """
    _launch(Kind.SWEEP, api.sweep_data(spec, preset, set_ or []), address, as_json, extend=extend)


@command(app, "resume", LAUNCH)
def resume(name: SweepName, address: Address = None, as_json: Json = False) -> None:
    """Resume an interrupted sweep or run from its recorded spec (finished cells are not rerun)."""
    lch, data = api.recorded(name)
    _launch(lch.kind, data, address, as_json)


@command(app, "cancel", LAUNCH)
def cancel(name: Annotated[str, typer.Argument(help="Sweep or run; on a cluster also a job id.")], address: Address = None):
    """Stop a running sweep: its driver stops the trials, marks them KILLED, and the sweep stays resumable."""
    out().print(Text(api.cancel(name, address)))


@command(app, "status", RESULTS)
def status(
    name: Annotated[str | None, typer.Argument(help="A sweep or run (default: all).", autocompletion=complete("sweeps"))] = None,
    as_json: Json = False,
    watch: Annotated[bool, typer.Option("--watch", help="Keep the table live until the sweep ends.")] = False,
) -> None:
    """Sweeps and runs in the store; with NAME, its cells and trials with progress."""
    rows = api.status(name)
    if watch and not as_json:
        return views.watch(out(), lambda: api.status(name), name)
    emit(as_json, rows, lambda: views.status_table(rows, name))


@command(app, "report", RESULTS)
def report(
    name: SweepName,
    fmt: Annotated[Literal["html", "md", "csv", "json"] | None, typer.Option("--format", help="Default: a table.")] = None,
    dest: Annotated[Path | None, typer.Option("--out", help="Write report.<format> into this folder.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Cell results as JSON (same as --format json).")] = False,
) -> None:
    """The comparison report: leaderboard with labelled intervals, ties, chance, cost, curves, paper vs ours.

    md, csv and json print to stdout unless --out is given; html is written to $AMCTL_HOME/reports/NAME/ by default.
    """
    chosen = "json" if as_json else fmt
    if dest is not None or chosen == "html":
        out().print(Text("\n".join(map(str, api.write_report(name, dest, chosen)))))
    elif chosen is None:
        views.render_report(out(), name, api.report_data(name))
    else:
        print(api.render_report(name, chosen), end="" if chosen == "csv" else "\n")


@command(app, "compare", RESULTS)
def compare(a: SweepName, b: SweepName, as_json: Json = False) -> None:
    """Two sweeps side by side: every cell of either, with intervals and the difference B - A."""
    rows = api.compare(a, b)
    emit(as_json, rows, lambda: views.compare_table(a, b, rows))


@command(app, "delete", MANAGE)
def delete(
    name: SweepName,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
    as_json: Json = False,
) -> None:
    """Remove a sweep or run from every store: SQL rows, MLflow runs and artifacts, Optuna studies, Tune folder."""
    gone = api.delete(name, dry_run=dry_run)
    emit(as_json, dataclasses.asdict(gone), lambda: views.deletion(gone))


@command(app, "list", MANAGE)
def list_(what: Annotated[Literal["mechanisms", "tasks", "presets"], typer.Argument()], as_json: Json = False) -> None:
    """What amctl knows: mechanisms (family, modalities, knobs, paper), tasks (what each tests, metric, knobs), presets."""
    rows = api.listing(what)
    emit(as_json, rows, lambda: views.listing_table(what, rows))


@command(app, "ui", MANAGE)
def ui(
    name: Annotated[str | None, typer.Argument(help="Sweep or run whose runs to open (default: the latest).")] = None,
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default 5000; 8080 with --optuna).")] = None,
    optuna_ui: Annotated[bool, typer.Option("--optuna", help="Serve optuna-dashboard over the cells' studies instead.")] = False,
    open_browser: Annotated[bool, typer.Option("--open", help="Open a browser tab.")] = False,
) -> None:
    """Serve the MLflow UI (or optuna-dashboard) on loopback over amctl's stores; request logs go to a file."""
    cmd, url, log = api.ui_command(port, optuna_ui, name)
    out(True).print(Text(f"{'optuna-dashboard' if optuna_ui else 'MLflow UI'}: {url}  (request log: {log}; Ctrl-C stops it)"))
    raise typer.Exit(api.serve(cmd, log, url if open_browser else None))


@command(app, "server", CLUSTER)
def server(
    port: Annotated[int, typer.Option(help="Port.")] = 5000,
    host: Annotated[str, typer.Option(help="Interface; 0.0.0.0 serves the cluster (put it behind auth).")] = "127.0.0.1",
    backend: Annotated[str | None, typer.Option(help="Database; default: MLFLOW_BACKEND_STORE_URI, MLFLOW_TRACKING_URI.")] = None,
    artifacts: Annotated[str | None, typer.Option(help="Artifact root: s3://, gs://, a folder; default AMCTL_ARTIFACTS.")] = None,
    workers: Annotated[int, typer.Option(help="Server worker processes.")] = 2,
) -> None:
    """Run the MLflow tracking server the cluster logs to: PostgreSQL backend, artifacts proxied to S3/GCS."""
    cmd = api.server_command(port, host, backend, artifacts, workers)
    out(True).print(Text(f"MLflow server: http://{host}:{port}; clients set MLFLOW_TRACKING_URI=http://{host}:{port}"))
    raise typer.Exit(api.serve(cmd))


@command(app, "cluster", CLUSTER)
def cluster(
    action: Annotated[Literal["up", "down", "status"], typer.Argument(help="ray up -y | ray down -y | ray status")],
    config: Annotated[Path | None, typer.Argument(help="Cluster-launcher YAML (cluster/aws.yaml); none: this machine.")] = None,
) -> None:
    """Bring a Ray cluster up or down, or show its nodes and demand; with no CONFIG, a local Ray head launches join."""
    note = out(True).print  # the local cluster's driver runs this CLI's app (platform/resident.py)
    raise typer.Exit(api.serve(api.cluster_command(action, config)) if config else api.local_cluster(action, note, "amctl:app"))


@command(app, "jobs", CLUSTER)
def jobs(address: Address = None, as_json: Json = False) -> None:
    """Jobs on a Ray cluster (newest first): amctl launches carry their sweep or run name."""
    rows = remote.jobs(remote.require_address(address))
    emit(as_json, rows, lambda: views.jobs_table(rows))


@command(app, "logs", CLUSTER)
def logs(
    job: Annotated[str, typer.Argument(help="Job id (amctl jobs).")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming until the job ends.")] = False,
    address: Address = None,
) -> None:
    """A Ray job's log (driver output), whole or followed."""
    url = remote.require_address(address)
    remote.follow(url, job, write) if follow else write(remote.logs(url, job))


def main() -> None:  # the console script's entry point (pyproject: amctl = "amctl:main"), served by a warm driver if one runs
    code = importlib.import_module("amlab.platform.resident").forward(sys.argv[1:], __file__)
    os._exit(code) if code is not None else run_then_exit(app)

if __name__ == "__main__":
    main()
