"""What the terminal shows: the live sweep table, result and status tables (kept out of the CLI module)."""

from __future__ import annotations

import time
from typing import Any

from rich.table import Table

from amlab.platform.results import UnknownSweep
from amlab.platform.store import Store


class SweepView:
    """Live table of a running sweep: one row per cell, updated from Tune's driver-side callbacks."""

    def __init__(self, cells, total: int, concurrency: int):
        self.rows = {c.key: {"cell": f"{c.mechanism} × {c.task}", "done": 0, "running": {}, "best": None,
                             "planned": (c.search.trials if c.space else 1) + len(c.seeds) - 1} for c in cells}
        self.total, self.concurrency, self.started = total, concurrency, time.time()

    def update(self, event: str, info: dict[str, Any]) -> None:
        row = self.rows.get(info.get("cell"))
        if row is None:
            return
        tid = info["trial_id"]
        if event in ("start", "result"):
            row["running"][tid] = (info.get("step", 0), info["steps"], info.get("phase"))
        else:
            row["running"].pop(tid, None)
            row["done"] += 1
        if info.get("objective") is not None and info.get("phase") == "search":
            row["best"] = info["objective"] if row["best"] is None else min(row["best"], info["objective"])

    def __rich__(self) -> Table:
        done = sum(r["done"] for r in self.rows.values())
        title = (f"trials {done}/{self.total} · {self.concurrency} at a time · "
                 f"{time.time() - self.started:.0f} s elapsed")
        table = Table("cell", "trials", "running (step/steps, phase)", "best objective ↓", title=title)
        for r in self.rows.values():
            running = ", ".join(f"{s}/{n} {p}" for s, n, p in r["running"].values()) or "-"
            best = f"{r['best']:.4g}" if r["best"] is not None else "-"
            table.add_row(r["cell"], f"{r['done']}/{r['planned']}", running, best)
        return table


def results_table(name: str, results: list[dict[str, Any]]) -> Table:
    """Cells of a sweep: median over seeds, per-seed values, sizes, status."""
    table = Table("mechanism", "task", "metric", "median over seeds", "per seed", "params", "state", "status", title=name)
    for r in results:
        arrow = "↑" if r["higher_is_better"] else "↓"
        value = f"{r['value']:.4g}" if r["value"] is not None else "-"
        seeds = " ".join(f"{v:.3g}" for v in r["per_seed"].values() if v is not None)
        table.add_row(r["mechanism"], r["task"], f"{r['metric']} {arrow}", value, seeds, str(r["params_count"] or "-"),
                      str(r["state_size"] if r["state_size"] is not None else "-"), r["status"])
    return table


def status_rows(store: Store, name: str | None) -> list[dict[str, Any]]:
    """Sweeps (or the one named) with their cells and trials, as plain data for --json and the tables."""
    with store.session() as s:
        if name:
            sweep = store.sweep(s, name)
            if sweep is None:
                known = ", ".join(x.name for x in store.sweeps(s)[:20]) or "none yet"
                raise UnknownSweep(f"no sweep or run named {name!r}; known: {known}")
            sweeps = [sweep]
        else:
            sweeps = store.sweeps(s)
        return [
            {"name": sw.name, "kind": sw.kind, "status": sw.status, "created_at": sw.created_at.isoformat(),
             "mlflow_run_id": sw.mlflow_run_id,
             "cells": [{"mechanism": c.mechanism, "task": c.task, "status": c.status, "config_hash": c.config_hash,
                        "value": c.value, "metric": c.metric,
                        "trials": [{"key": t.trial_key, "phase": t.phase, "seed": t.seed, "status": t.status,
                                    "steps_done": t.steps_done, "steps": t.config["train"]["steps"],
                                    "early_stopped": t.early_stopped, "mlflow_run_id": t.mlflow_run_id}
                                   for t in c.trials]} for c in sw.cells]}
            for sw in sweeps
        ]


def status_table(rows: list[dict[str, Any]], name: str | None) -> Table:
    """All sweeps, one row each; or, with a name, that sweep's cells with trial counts and live progress."""
    if not name:
        table = Table("name", "kind", "status", "cells", "trials finished", "created", title="amctl status")
        for r in rows:
            trials = [t for c in r["cells"] for t in c["trials"]]
            done = sum(t["status"] == "FINISHED" for t in trials)
            table.add_row(r["name"], r["kind"], r["status"], str(len(r["cells"])), f"{done}/{len(trials)}",
                          r["created_at"][:19])
        return table
    r = rows[0]
    table = Table("cell", "status", "trials (finished/early-stopped/failed/total)", "running", "value",
                  title=f"{r['kind']} {r['name']}: {r['status']}")
    for c in r["cells"]:
        ts = c["trials"]
        count = {k: sum(t["status"] == k for t in ts) for k in ("FINISHED", "FAILED")}
        early = sum(t["early_stopped"] for t in ts)
        running = ", ".join(f"{t['phase']} s{t['seed']} {t['steps_done']}/{t['steps']}" for t in ts if t["status"] == "RUNNING")
        value = f"{c['metric']}={c['value']:.4g}" if c["value"] is not None else "-"
        table.add_row(f"{c['mechanism']} × {c['task']}", c["status"],
                      f"{count['FINISHED']}/{early}/{count['FAILED']}/{len(ts)}", running or "-", value)
    return table
