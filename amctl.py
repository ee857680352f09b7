"""amctl: comparative experiments on attention and memory mechanisms (the command line).

Thin by design: parse, call amlab.platform.api, render with amlab.platform.views.  Exit codes:
0 success, 1 the work ran and failed, 2 bad input (nothing was started or recorded),
130 interrupted or cancelled (resumable).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from amlab.platform.errors import AmctlError
from amlab.platform.status import Kind, Status

__version__ = "0.1.0"
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130
EXITS = {Status.FINISHED: 0, Status.KILLED: EXIT_INTERRUPTED}
CTX = {"help_option_names": ["-h", "--help"]}
LAUNCH, RESULTS, MANAGE, CLUSTER = "Launch", "Results", "Manage", "Cluster"



class _Group(typer.core.TyperGroup):
    def list_commands(self, ctx) -> list[str]:  # `launch` heads its help panel, before resume and cancel
        return sorted(super().list_commands(ctx), key=lambda name: name != "launch")


# a flag takes no value: show none (Typer prints "<bool>" beside every flag, --help included)
_shown_type = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else _shown_type(self, ctx)
app = typer.Typer(help=__doc__.split("\n")[0], no_args_is_help=True, context_settings=CTX, cls=_Group)
launch_app = typer.Typer(help="Launch training: one run, or a sweep.", no_args_is_help=True, context_settings=CTX)
list_app = typer.Typer(help="List what amctl knows: mechanisms, tasks, presets.", no_args_is_help=True, context_settings=CTX)
cluster_app = typer.Typer(help="Bring a Ray cluster up or down, or show it (wraps `ray up/down/status`).",
                          no_args_is_help=True, context_settings=CTX)
app.add_typer(launch_app, name="launch", rich_help_panel=LAUNCH)
app.add_typer(list_app, name="list", rich_help_panel=MANAGE)
app.add_typer(cluster_app, name="cluster", rich_help_panel=CLUSTER)


def out(stderr: bool = False) -> Console:
    """A console that never cuts a table when piped: one line per row, whatever the width, so grep finds names."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 10_000, highlight=False)


def command(group: typer.Typer, name: str, panel: str | None = None):
    """Register a command whose platform errors become one clean message and a meaningful exit code."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except AmctlError as e:
                out(True).print(Text.assemble(("error: ", "bold red"), e.message))
                for line in e.problems:
                    out(True).print(Text(f"  - {line}"))
                raise typer.Exit(e.exit_code) from None
            except KeyboardInterrupt:
                out(True).print("interrupted")
                raise typer.Exit(EXIT_INTERRUPTED) from None
        return group.command(name, rich_help_panel=panel)(run)
    return wrap


def complete(kind: str):
    """Shell completion from the registries and the store; silent on any failure (it runs inside the user's shell)."""
    def names(incomplete: str) -> list[str]:
        try:
            from amlab.platform import api

            return [n for n in api.names(kind) if n.startswith(incomplete)]
        except Exception:
            return []
    return names


class Format(str, Enum):
    html, md, csv, json = "html", "md", "csv", "json"


Address = Annotated[str | None, typer.Option("--address", envvar="RAY_ADDRESS", show_envvar=True,
                                             help="Ray cluster: GCS host:port or dashboard http://HEAD:8265; default: embedded local Ray.")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
Sets = Annotated[list[str] | None, typer.Option("--set", help="Override a spec field, e.g. train.steps=200 (repeatable).")]
SweepName = Annotated[str, typer.Argument(help="Sweep or run name (amctl status).", autocompletion=complete("sweeps"))]


def version_callback(value: bool) -> None:
    if value:
        print(f"amctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version.")] = False,
    home: Annotated[Path | None, typer.Option("--home", envvar="AMCTL_HOME", show_envvar=True,
                                              help="Folder of the embedded stores (default ~/.amctl).")] = None,
) -> None:
    """amctl: mechanism × task experiments on Ray, tracked in MLflow and a SQL store."""
    if home is not None:
        os.environ["AMCTL_HOME"] = str(home)


def _launch(kind: Kind, data: dict[str, Any], address: str | None, as_json: bool, fresh: bool = False, extend: bool = False):
    """Validate, then run here (live view) or submit to the cluster's Jobs API; exit with the outcome."""
    from amlab.platform import api, remote, views

    lch = api.plan(kind, data)
    for notice in lch.notices:
        out(True).print(Text(f"notice: {notice}", style="yellow"))
    if url := remote.jobs_address(address):
        args = ["--fresh"] * fresh + ["--extend"] * extend + ["--json"] * as_json
        job, end = api.submit(lch, data, url, args, lambda chunk: (sys.stdout.write(chunk), sys.stdout.flush()))
        out(True).print(f"job {job}: {end.status}" + (f" (exit code {end.exit_code})" if end.exit_code else ""))
        raise typer.Exit(0 if end.status == "SUCCEEDED" else EXIT_INTERRUPTED if end.status == "STOPPED" else end.exit_code or 1)
    with views.LiveLaunch(kind, lch, out(True), quiet=as_json) as live:
        outcome = api.launch(lch, address=address, fresh=fresh, extend=extend, display=live.update, on_plan=live.plan)
    summary = views.outcome_data(outcome, api.trial_metrics(lch.name) if kind is Kind.RUN else api.results(lch.name))
    if as_json:
        print(json.dumps(summary, indent=1, default=str))
    else:
        views.render_outcome(out(), outcome, summary, api.report_data(lch.name) if kind is Kind.SWEEP else None)
    raise typer.Exit(EXITS.get(outcome.status, EXIT_FAILED))


@command(launch_app, "run")
def launch_run(
    mechanism: Annotated[str | None, typer.Option("--mechanism", "-m", help="Mechanism name.", autocompletion=complete("mechanisms"))] = None,
    task: Annotated[str | None, typer.Option("--task", "-t", help="Task name.", autocompletion=complete("tasks"))] = None,
    spec: Annotated[Path | None, typer.Option("--spec", help="YAML run spec: mechanism, task, train sections.")] = None,
    set_: Sets = None,
    address: Address = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Delete what an identical earlier run recorded and train again.")] = False,
    as_json: Json = False,
) -> None:
    """Train one mechanism on one task: a one-cell, one-trial sweep, tracked in MLflow and the store."""
    from amlab.platform import api

    _launch(Kind.RUN, api.run_data(spec, mechanism, task, set_ or []), address, as_json, fresh=fresh)


@command(launch_app, "sweep")
def launch_sweep(
    spec: Annotated[Path | None, typer.Argument(help="YAML sweep spec; omitted: the built-in quick study.")] = None,
    preset_name: Annotated[str | None, typer.Option("--preset", help="A built-in study (amctl list presets).",
                                                    autocompletion=complete("presets"))] = None,
    set_: Sets = None,
    address: Address = None,
    extend: Annotated[bool, typer.Option("--extend", help="Add this spec's new cells to an existing sweep of that name.")] = False,
    as_json: Json = False,
) -> None:
    """Run a mechanism × task grid: Optuna search per cell on Ray Tune with ASHA, then every seed.

    Launching the same spec again skips finished cells and resumes unfinished ones; a changed spec under
    the same name is refused (exit 2) unless --extend.
    """
    from amlab.platform import api

    _launch(Kind.SWEEP, api.sweep_data(spec, preset_name, set_ or []), address, as_json, extend=extend)


@command(app, "resume", LAUNCH)
def resume(name: SweepName, address: Address = None, as_json: Json = False) -> None:
    """Resume an interrupted sweep or run from its recorded spec (finished cells are not rerun)."""
    from amlab.platform import api

    lch, data = api.recorded(name)
    _launch(lch.kind, data, address, as_json)


@command(app, "cancel", LAUNCH)
def cancel(
    name: Annotated[str, typer.Argument(help="Sweep or run name; with a cluster also a job id.", autocompletion=complete("sweeps"))],
    address: Address = None,
) -> None:
    """Stop a running sweep: its driver stops the trials, marks them KILLED, and the sweep stays resumable."""
    from amlab.platform import api, remote

    if url := remote.jobs_address(address):
        job, final = remote.cancel(url, name)
        out().print(Text(f"job {job}: {final}"))
        return
    was = api.cancel(name)
    message = "cancel requested; its driver stops within seconds" if was is Status.RUNNING else f"is {was}; nothing to cancel"
    out().print(Text(f"{name}: {message}"))


@command(app, "status", RESULTS)
def status(
    name: Annotated[str | None, typer.Argument(help="A sweep or run; all when omitted.", autocompletion=complete("sweeps"))] = None,
    as_json: Json = False,
    watch: Annotated[bool, typer.Option("--watch", help="Keep the table live until the sweep ends.")] = False,
) -> None:
    """Sweeps and runs in the store; with NAME, its cells and trials with progress."""
    from amlab.platform import api, views

    rows = api.status(name)
    if as_json:
        print(json.dumps(rows, indent=1))
    elif watch:
        views.watch(out(), lambda: api.status(name), name)
    else:
        out().print(views.status_table(rows, name))


@command(app, "report", RESULTS)
def report(
    name: SweepName,
    fmt: Annotated[Format | None, typer.Option("--format", help="Default: a table; with --out: every format.")] = None,
    dest: Annotated[Path | None, typer.Option("--out", help="Write report.<format> into this folder.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Cell results as JSON (same as --format json).")] = False,
) -> None:
    """The comparison report: leaderboard with labelled intervals, ties, chance, fairness, cost, curves, paper vs ours.

    md, csv and json print to stdout unless --out is given; html is always written to a file
    (default $AMCTL_HOME/reports/NAME/report.html).
    """
    from amlab.platform import api, views

    chosen = "json" if as_json else fmt.value if fmt else None
    if dest is not None or chosen == "html":
        for path in api.write_report(name, dest, chosen):
            out().print(Text(str(path)))
    elif chosen is None:
        views.render_report(out(), name, api.report_data(name))
    else:
        print(api.render_report(name, chosen), end="" if chosen == "csv" else "\n")


@command(app, "compare", RESULTS)
def compare(a: SweepName, b: SweepName, as_json: Json = False) -> None:
    """Two sweeps side by side: every cell of either, with intervals and the difference B - A."""
    from amlab.platform import api, views

    rows = api.compare(a, b)
    print(json.dumps(rows, indent=1, default=str)) if as_json else out().print(views.compare_table(a, b, rows))


@command(app, "delete", MANAGE)
def delete(
    name: SweepName,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
    as_json: Json = False,
) -> None:
    """Remove a sweep or run from every store: SQL rows, MLflow runs and artifacts, Optuna studies, Tune folder."""
    from dataclasses import asdict

    from amlab.platform import api, views

    gone = api.delete(name, dry_run=dry_run)
    print(json.dumps(asdict(gone), indent=1)) if as_json else out().print(views.deletion(gone))


@command(list_app, "mechanisms")
def list_mechanisms(as_json: Json = False) -> None:
    """Mechanisms: family, accepted task modalities, knobs with defaults, paper."""
    _registry("mechanisms", as_json)


@command(list_app, "tasks")
def list_tasks(as_json: Json = False) -> None:
    """Tasks: what each tests, modality, loss, headline metric, knobs with defaults."""
    _registry("tasks", as_json)


def _registry(kind: str, as_json: bool) -> None:
    from amlab.platform import views
    from amlab.workloads.registry import MECHANISMS, TASKS

    rows = [e.describe() for e in (MECHANISMS if kind == "mechanisms" else TASKS)]
    print(json.dumps(rows, indent=1, default=str)) if as_json else out().print(views.registry_table(kind, rows))


@command(list_app, "presets")
def list_presets(as_json: Json = False) -> None:
    """Built-in studies: the quick study and sweeps that mirror papers, with what each paper predicts."""
    from amlab.platform import views
    from amlab.platform.presets import PRESETS

    rows = [{"name": n, "predicts": p["predicts"], "spec": p["spec"]} for n, p in PRESETS.items()]
    print(json.dumps(rows, indent=1)) if as_json else out().print(views.presets_table(rows))


@command(app, "jobs", CLUSTER)
def jobs(address: Address = None, as_json: Json = False) -> None:
    """Jobs on a Ray cluster (newest first): amctl launches carry their sweep or run name."""
    from amlab.platform import remote, views

    rows = remote.jobs(remote.require_address(address))
    print(json.dumps(rows, indent=1, default=str)) if as_json else out().print(views.jobs_table(rows))


@command(app, "logs", CLUSTER)
def logs(
    job: Annotated[str, typer.Argument(help="Job id (amctl jobs).")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming until the job ends.")] = False,
    address: Address = None,
) -> None:
    """A Ray job's log (driver output), whole or followed."""
    from amlab.platform import remote

    url = remote.require_address(address)
    if follow:
        remote.follow(url, job, lambda chunk: (sys.stdout.write(chunk), sys.stdout.flush()))
    else:
        sys.stdout.write(remote.logs(url, job))


def _serve(cmd: list[str], what: str, log: Path | None = None) -> None:
    from amlab.platform import api

    out(True).print(Text(what + (f"  (request log: {log})" if log else "")))
    raise typer.Exit(api.serve(cmd, log))


@command(app, "ui", MANAGE)
def ui(
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default 5000; 8080 with --optuna).")] = None,
    optuna_ui: Annotated[bool, typer.Option("--optuna", help="Serve optuna-dashboard over the cells' studies instead.")] = False,
    open_browser: Annotated[bool, typer.Option("--open", help="Open a browser tab.")] = False,
) -> None:
    """Serve the MLflow UI (or optuna-dashboard) on loopback over amctl's stores (Ctrl-C stops it)."""
    from amlab.platform import api

    cmd, url, log = api.ui_command(port, optuna_ui)
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    _serve(cmd, f"{'optuna-dashboard' if optuna_ui else 'MLflow UI'}: {url}", log)


@command(app, "server", CLUSTER)
def server(
    port: Annotated[int, typer.Option(help="Port.")] = 5000,
    host: Annotated[str, typer.Option(help="Interface; 0.0.0.0 serves the cluster (put it behind auth).")] = "127.0.0.1",
    backend: Annotated[str | None, typer.Option(help="MLflow backend store; default: MLFLOW_TRACKING_URI's database.")] = None,
    artifacts: Annotated[str | None, typer.Option(help="Artifact root: s3://, gs://, a folder; default AMCTL_ARTIFACTS.")] = None,
    workers: Annotated[int, typer.Option(help="Server worker processes.")] = 2,
) -> None:
    """Run the MLflow tracking server the cluster logs to: PostgreSQL backend, artifacts proxied to S3/GCS."""
    from amlab.platform import api

    _serve(api.server_command(port, host, backend, artifacts, workers), f"MLflow server: http://{host}:{port}")


ClusterConfig = Annotated[Path, typer.Argument(help="Cluster-launcher YAML, e.g. cluster/aws.yaml.")]


def _cluster_command(verb: str, ray_args: tuple[str, ...], doc: str) -> None:
    def run(config: ClusterConfig) -> None:
        from amlab.platform import api

        tail = ["ray status"] if verb == "status" else []
        raise typer.Exit(subprocess.call(api.cluster_command(config, *ray_args, str(config), *tail)))

    run.__doc__ = doc
    command(cluster_app, verb)(run)


_cluster_command("up", ("up", "-y"), "Start (or update) the cluster: `ray up -y CONFIG`; `ray dashboard CONFIG` forwards 8265.")
_cluster_command("down", ("down", "-y"), "Tear the cluster down: `ray down -y CONFIG`.")
_cluster_command("status", ("exec",), "Nodes, resources and pending demand: `ray status` run on the head (`ray exec`).")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
