"""Every terminal view: the live sweep table, results, status, jobs, comparisons and registry listings.

User text (names, errors) goes into cells as `Text`, never as markup, so a
name like '[/red]' is shown as typed.
"""

from __future__ import annotations

import time
from typing import Any

from rich.table import Column, Table
from rich.text import Text

from amlab.platform import lease
from amlab.platform.status import STEP, Phase, Status, val_key
from amlab.platform.store import Store, now


def _t(value: Any) -> Text:
    return Text("-" if value is None else str(value))


class SweepView:
    """Live table of a running sweep: one row per cell, updated from Tune's driver-side callbacks."""

    def __init__(self, cells, total: int, concurrency: int):
        from amlab.workloads.registry import TASKS

        self.rows = {c.key: {"cell": c.title, "done": 0, "running": {}, "best": None, "metric": TASKS.get(c.task).metric,
                             "higher": TASKS.get(c.task).higher_is_better, "planned": c.trials} for c in cells}
        self.total, self.concurrency, self.started = total, concurrency, time.time()

    def update(self, event: str, info: dict[str, Any]) -> None:
        row = self.rows.get(info.get("cell"))
        if row is None:
            return
        tid = info["trial_id"]
        if event in ("start", "result"):
            row["running"][tid] = (info.get(STEP, 0), info["steps"], info.get("phase"))
        else:
            row["running"].pop(tid, None)
            row["done"] += 1
        value = info.get(val_key(row["metric"]))
        if value is not None and info.get("phase") == Phase.SEARCH:
            better = row["best"] is None or (value > row["best"] if row["higher"] else value < row["best"])
            row["best"] = value if better else row["best"]

    def __rich__(self) -> Table:
        done = sum(r["done"] for r in self.rows.values())
        title = f"trials {done}/{self.total} · {self.concurrency} at a time · {time.time() - self.started:.0f} s elapsed"
        table = Table("cell", "trials", "running (step/steps, phase)", "best search result (validation)", title=title)
        for r in self.rows.values():
            running = ", ".join(f"{s}/{n} {p}" for s, n, p in r["running"].values()) or "-"
            best = f"{r['metric']} {r['best']:.4g} {'↑' if r['higher'] else '↓'}" if r["best"] is not None else "-"
            table.add_row(Text(r["cell"]), f"{r['done']}/{r['planned']}", Text(running), best)
        return table


def leaderboard_table(name: str, cells: list[dict[str, Any]]) -> Table:
    """The report's leaderboard: the test metric's mean over seeds with its labelled interval, chance, sizes, ranks."""
    from amlab.platform.report import fmt

    table = Table("mechanism", "task", "test metric", "mean ± interval over seeds", "n", "rank", "chance", "params",
                  "state", "status", title=Text(f"{name}: test split"))
    for c in cells:
        arrow = "↑" if c["higher_is_better"] else "↓"
        mark = "best" if c.get("best") else "tie" if c.get("tie") else c.get("rank_note") or "-"
        table.add_row(_t(c["mechanism"]), _t(c["task"]), f"{c['metric']} {arrow}", fmt(c.get("mean"), c["metric"], c.get("ci")),
                      _t(c.get("n_seeds")), Text(mark), fmt(c.get("chance"), c["metric"]), _t(c["params_count"]),
                      _t(c["state_size"]), _t(c["status"]))
    table.caption = next((c["ci_label"] for c in cells if c.get("ci")), "no interval: fewer than 2 seeds")
    return table


def status_rows(store: Store, name: str | None) -> list[dict[str, Any]]:
    """Sweeps (or the one named) with their cells and trials, as plain data for --json and the tables.

    `status` is what the store holds; `effective_status` is INTERRUPTED where the sweep's driver is gone (lease.py).
    """
    at = now()
    with store.session() as s:
        if name:
            sweeps = [store.named(s, name)]
        else:
            sweeps = store.sweeps(s)
        return [
            {"name": sw.name, "kind": str(sw.kind), "status": str(sw.status), "effective_status": lease.effective_status(sw, at),
             "driver": lease.describe(sw, at), "cancel_requested": sw.cancel_requested,
             "created_at": sw.created_at.isoformat(), "mlflow_run_id": sw.mlflow_run_id,
             "cells": [{"mechanism": c.mechanism_label, "task": c.task_label, "status": str(c.status),
                        "config_hash": c.config_hash,
                        "value": c.value, "metric": c.metric,
                        "trials": [{"key": t.trial_key, "phase": str(t.phase), "seed": t.seed, "status": str(t.status),
                                    "steps_done": t.steps_done, "steps": t.config["train"]["steps"],
                                    "early_stopped": t.early_stopped, "error": t.error, "mlflow_run_id": t.mlflow_run_id}
                                   for t in c.trials]} for c in sw.cells]}
            for sw in sweeps
        ]


def status_table(rows: list[dict[str, Any]], name: str | None) -> Table:
    """All sweeps, one row each; or, with a name, that sweep's cells with trial counts and live progress."""
    if not name:
        table = Table("name", "kind", "status", "cells", "trials finished", "created", title="amctl status")
        for r in rows:
            trials = [t for c in r["cells"] for t in c["trials"]]
            done = sum(t["status"] == Status.FINISHED for t in trials)
            table.add_row(_t(r["name"]), r["kind"], Text(_status(r)), str(len(r["cells"])), f"{done}/{len(trials)}",
                          r["created_at"][:19])
        return table
    r = rows[0]
    table = Table("cell", "status", "trials (finished/early-stopped/failed/total)", "running", "test value",
                  title=Text(f"{r['kind']} {r['name']}: {_status(r)}"))
    for c in r["cells"]:
        ts = c["trials"]
        count = {k: sum(t["status"] == k for t in ts) for k in (Status.FINISHED, Status.FAILED)}
        early = sum(t["early_stopped"] for t in ts)
        running = ", ".join(f"{t['phase']} s{t['seed']} {t['steps_done']}/{t['steps']}"
                            for t in ts if t["status"] == Status.RUNNING)
        value = f"{c['metric']}={c['value']:.4g}" if c["value"] is not None else "-"
        errors = [t["error"] for t in ts if t["error"]]
        value += f"  failed: {errors[-1]}" if errors else ""
        table.add_row(Text(f"{c['mechanism']} × {c['task']}"), c["status"],
                      f"{count[Status.FINISHED]}/{early}/{count[Status.FAILED]}/{len(ts)}", Text(running or "-"), Text(value))
    return table


def _status(r: dict[str, Any]) -> str:
    """A sweep's status as shown: an interrupted one says since when its driver is silent and how to go on."""
    if r["effective_status"] != lease.INTERRUPTED:
        return r["status"] + (" (cancel requested)" if r["cancel_requested"] else "")
    age = (r["driver"] or {}).get("heartbeat_age_s")
    since = f", last heartbeat {age:.0f} s ago" if age is not None else ""
    return f"{lease.INTERRUPTED} (driver gone{since}; amctl resume {r['name']})"


def active(rows: list[dict[str, Any]]) -> bool:
    return any(r["effective_status"] in (Status.PENDING, Status.RUNNING) for r in rows)


def jobs_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("job", "status", "kind", "name", "entrypoint", title="Ray jobs")
    for r in rows:
        table.add_row(_t(r["job"]), r["status"], _t(r["kind"]), _t(r["name"]), _t(r["entrypoint"]))
    return table


def compare_table(a: str, b: str, rows: list[dict[str, Any]]) -> Table:
    from amlab.platform.report import fmt

    table = Table("mechanism", "task", "test metric", Column(Text(a)), Column(Text(b)), Column(Text(f"{b} - {a}")),
                  "paired difference",
                  title=Text(f"{a} vs {b}: means over seeds"))
    for r in rows:
        diff = "-" if r["difference"] is None else f"{r['difference']:+.4g}"
        overlap = {None: "insufficient seeds", True: "no difference found", False: "separate"}[r["overlap"]]
        table.add_row(_t(r["mechanism"]), _t(r["task"]), f"{r['metric']} {'↑' if r['higher_is_better'] else '↓'}",
                      fmt(r["a"], r["metric"], r["a_ci"]), fmt(r["b"], r["metric"], r["b_ci"]), diff, overlap)
    return table


def listing_table(kind: str, rows: list[dict[str, Any]]) -> Table:
    """`amctl list mechanisms|tasks|presets`: one line each with what it is, then its knobs."""
    if kind == "presets":
        return presets_table(rows)
    if kind == "mechanisms":
        table = Table("name", "family", "modalities", "knobs (default)", "paper", title="mechanisms")
        for r in rows:
            knobs = ", ".join(f"{k}={v['default']}" for k, v in r["params"].items())
            table.add_row(*map(Text, (r["name"], r["family"], ",".join(r["modalities"]), knobs, r["paper"])))
        return table
    table = Table("name", "what it tests", "modality", "loss", "metric", "knobs (default)", title="tasks")
    for r in rows:
        knobs = ", ".join(f"{k}={v['default']}" for k, v in r["params"].items())
        table.add_row(*map(Text, (r["name"], r.get("summary", ""), r["modality"], r["loss"],
                                  f"{r['metric']} {'↑' if r['higher_is_better'] else '↓'}", knobs)))
    return table


def presets_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("name", "mechanisms × tasks", "the paper predicts", title="presets")
    for r in rows:
        table.add_row(*map(Text, (r["name"], f"{', '.join(r['spec']['mechanisms'])} × {', '.join(r['spec']['tasks'])}",
                                  r["predicts"])))
    return table


class LiveLaunch:
    """What a launch shows while it runs: a progress bar for a single run, the live cell table for a sweep."""

    def __init__(self, kind, launch, console, quiet: bool = False):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.kind, self.launch, self.console, self.quiet = kind, launch, console, quiet
        self.view: SweepView | None = None
        self.live = None
        if kind == "run":
            cell = launch.cells[0]
            # redrawn twice a second, as the sweep's table: its values change at reports, every 2 s at most
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                console=console, disable=quiet, refresh_per_second=2)
            self.task = self.bar.add_task(f"{cell.mechanism} × {cell.task}", total=cell.base["train"]["steps"],
                                          info="starting Ray")

    def __enter__(self) -> LiveLaunch:
        if self.kind == "run":
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.kind == "run":
            self.bar.stop()
        elif self.live is not None:
            self.live.stop()

    def plan(self, pending, total: int, concurrency: int) -> None:
        from rich.live import Live

        if self.kind == "run":
            self.bar.update(self.task, info="training")
            return
        self.view = SweepView(pending, total, concurrency)
        if not self.quiet:
            self.live = Live(self.view, console=self.console, refresh_per_second=2)
            self.live.start()

    def update(self, event: str, info: dict[str, Any]) -> None:
        if event == "failed" and info.get("error"):  # above the live view; on a cluster, into the job's log
            tail = "\n".join(info["error"].rstrip().splitlines()[-TRACEBACK_LINES:])
            self.console.print(Text(f"trial {info['trial_id']} ({info['cell']}) failed:\n{tail}", style="red"))
        if self.kind == "run":
            if STEP in info:
                loss = info.get("train/loss")
                self.bar.update(self.task, completed=info[STEP], info=f"train loss {loss:.4f}" if loss is not None else "")
        elif self.view is not None:
            self.view.update(event, info)


TRACEBACK_LINES = 25  # of a failed trial's traceback, printed by the driver (the whole one is in the trial's folder)


def outcome_data(outcome, detail) -> dict[str, Any]:
    """What `launch --json` prints: the outcome, plus the run's metrics or the sweep's cells."""
    data = {"name": outcome.name, "kind": str(outcome.kind), "status": str(outcome.status),
            "mlflow_run_id": outcome.mlflow_run_id, "concurrency": outcome.concurrency, "skipped": outcome.skipped}
    if str(outcome.kind) == "run":
        return {**data, "reused": not outcome.ran, "metrics": detail}
    return {**data, "cells": detail}


def render_outcome(console, outcome, summary: dict[str, Any], report: dict[str, Any] | None) -> None:
    """The end of a launch: the same numbers `amctl report` shows, where the report is, and how to resume."""
    name = Text(outcome.name)
    if report is None:
        from amlab.platform.status import test_key, val_key

        metrics = summary["metrics"]
        shown = "  ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())
                          if k == "train/loss" or k.count("/") == 1 and k.startswith((val_key(""), test_key(""))))
        note = " (an identical run already finished; --fresh trains again)" if summary["reused"] else ""
        console.print(Text.assemble((str(outcome.status), "bold"), " ", name, note, "  ", shown))
        console.print(Text(f"MLflow run id: {outcome.mlflow_run_id}   (browse: amctl ui)"))
        return
    if outcome.skipped:
        console.print(f"skipped {len(outcome.skipped)} finished cell(s) (same config hash)")
    render_report(console, outcome.name, report)
    console.print(Text.assemble((str(outcome.status), "bold"), " sweep ", name, f"   MLflow run id: {outcome.mlflow_run_id}"))
    if outcome.status == Status.KILLED:
        console.print(Text(f"resume with: amctl resume {outcome.name}"))


def render_report(console, name: str, data: dict[str, Any]) -> None:
    console.print(leaderboard_table(name, data["cells"]))
    for line in data["summary"]:
        console.print(Text(f"- {line}"))
    console.print(Text(f"full report: amctl report {name} --format html  (also logged under report/ of the sweep's MLflow run)"))


def watch(console, fetch, name: str | None) -> None:
    """`status --watch`: redraw until nothing is pending or running."""
    from rich.live import Live

    rows = fetch()
    with Live(status_table(rows, name), console=console, refresh_per_second=1) as live:
        while active(rows):
            time.sleep(2)
            rows = fetch()
            live.update(status_table(rows, name))


def deletion(gone) -> Text:
    verb = "removed" if gone.done else "would remove"
    return Text(f"{gone.name}: {verb} {gone.store_rows} store rows, {len(gone.mlflow_runs)} MLflow runs (with artifacts), "
                f"{len(gone.studies)} Optuna studies, {len(gone.folders)} folders" +
                "".join(f"\n  {f}" for f in gone.folders))
