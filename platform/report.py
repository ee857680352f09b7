"""The comparison report of a sweep: leaderboard with intervals, fairness, cost, robustness, curves,
heatmaps, paper vs ours and a generated summary; as HTML (one self-contained file), Markdown, CSV and JSON.

Numbers come from the store (cell values, per-seed test metrics, trial
rows), MLflow (learning curves, dump images) and the cells' Optuna studies
(parameter importances).  `collect` gathers them once; the renderers only
format.  `publish` writes every format and logs it to the sweep's MLflow run.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import tempfile
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from amlab.platform import stats
from amlab.platform.papers import PERFECT, applicable
from amlab.platform.results import cell_results
from amlab.platform.settings import Settings
from amlab.platform.spec import RunSpec
from amlab.platform.store import Store
from amlab.workloads.registry import TASKS

FORMATS = ("html", "md", "csv", "json")
TEMPLATE = "report.html.j2"  # in dashboards/, installed as the package data of amlab.dashboards
TARGET_FRACTION = 0.9  # "solves": 90 % of the way from chance to a perfect score
MIN_IMPORTANCE_TRIALS = 4  # fANOVA on fewer completed trials says nothing
PERCENT = {"accuracy", "error"}
HEATMAP_ORDER = ("attention", "read", "write", "gate", "cell")
AXIS_NAMES = {"len": "test length", "facts": "number of facts", "items": "number of items", "kv": "key-value pairs"}


# -- numbers ---------------------------------------------------------------------------------------

def fmt(value: float | None, metric: str, ci: tuple[float, float] | None = None) -> str:
    """'99.8 % ± 0.2' for fractions shown as percent, '3.12 ± 0.4' otherwise; '-' when missing."""
    if value is None:
        return "-"
    scale, unit = (100.0, " %") if metric in PERCENT else (1.0, "")
    text = f"{value * scale:.3g}{unit}"
    if ci is not None and ci[1] > ci[0]:
        half = max(value - ci[0], ci[1] - value) * scale
        text += f" ± {half:.2g}"
    return text


def _task_info(task: str, spec: dict[str, Any], cache: dict[str, tuple[float, list[str]]]) -> tuple[float, list[str]]:
    """(chance level, test group labels) of the task as the cell configured it."""
    key = json.dumps(spec["task"], sort_keys=True)
    if key not in cache:
        built = TASKS.get(task).build(RunSpec.model_validate(spec).task_params())
        cache[key] = (float(built.chance), list(built.eval_groups("test")))
    return cache[key]


def target_of(metric: str, chance: float) -> float:
    perfect = PERFECT.get(metric, 0.0)
    return chance + TARGET_FRACTION * (perfect - chance)


def reached(value: float | None, target: float, higher_is_better: bool) -> bool:
    return value is not None and (value >= target if higher_is_better else value <= target)


def leaderboard(store: Store, name: str) -> list[dict[str, Any]]:
    """`cell_results` plus the interval, best/tie marks, chance level and target of every cell (store only)."""
    cells = cell_results(store, name)
    specs = _cell_specs(store, name)
    cache: dict[str, tuple[float, list[str]]] = {}
    for c in cells:
        values = [v for v in c["per_seed"].values() if v is not None]
        ci = stats.bootstrap_ci(values, seed=0)
        chance, groups = _task_info(c["task"], specs[c["config_hash"]], cache)
        c.update(ci=ci, ci_low=ci[0] if ci else None, ci_high=ci[1] if ci else None, n_seeds=len(values),
                 chance=chance, test_groups=groups, target=target_of(c["metric"], chance))
        c["reached_target"] = reached(c["value"], c["target"], c["higher_is_better"])
    for task in {c["task"] for c in cells}:
        group = [c for c in cells if c["task"] == task]
        stats.rank_cells(group, group[0]["higher_is_better"])
    return cells


def _cell_specs(store: Store, name: str) -> dict[str, dict[str, Any]]:
    with store.session() as s:
        return {c.config_hash: c.spec for c in store.sweep(s, name).cells}


def _seed_trials(cell) -> list:
    """The runs behind the cell's value: its best full-length search trial and the seed replicates."""
    full = [t for t in cell.trials if t.phase == "search" and t.status == "FINISHED" and t.metrics
            and not t.early_stopped and "objective" in t.metrics]
    best = [min(full, key=lambda t: t.metrics["objective"])] if full else []
    return best + [t for t in cell.trials if t.phase == "seed" and t.status == "FINISHED" and t.metrics]


def _epoch_ms(t: datetime) -> float:
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp() * 1000


def importances(study_name: str, optuna_url: str) -> tuple[dict[str, float], str]:
    """Optuna's parameter importances for a cell's mirrored study, or an empty dict and why not."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=optuna_url)
    except KeyError:
        return {}, "no Optuna study"
    return importances_of(study)


def importances_of(study) -> tuple[dict[str, float], str]:
    import optuna

    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < MIN_IMPORTANCE_TRIALS:
        return {}, f"needs ≥ {MIN_IMPORTANCE_TRIALS} completed search trials (has {len(done)})"
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator)), ""
    except (RuntimeError, ValueError) as e:
        return {}, f"not computable: {e}"


def collect(settings: Settings, name: str) -> dict[str, Any]:
    """Everything the report states, as plain data (the JSON format is its `cells`)."""
    from mlflow.tracking import MlflowClient

    store = Store(settings.db_url)
    cells = leaderboard(store, name)
    client = MlflowClient(settings.mlflow_uri)
    with store.session() as s:
        sweep = store.sweep(s, name)
        rows = {c.config_hash: c for c in sweep.cells}
        header = {"name": sweep.name, "status": sweep.status, "mlflow_run_id": sweep.mlflow_run_id,
                  "created_at": sweep.created_at.isoformat()[:19], "spec": sweep.spec}
        for c in cells:
            row = rows[c["config_hash"]]
            _cost_and_curves(c, row, client)
            search = [t for t in row.trials if t.phase == "search" and t.metrics and f"val/{c['metric']}" in t.metrics]
            values = sorted(t.metrics[f"val/{c['metric']}"] for t in search)
            c["trial_values"] = values
            c["trial_spread"] = values[-1] - values[0] if len(values) > 1 else None
            c["importances"], c["importance_note"] = importances(f"{name}:{c['mechanism']}-{c['task']}-{c['config_hash'][:8]}",
                                                                 settings.optuna_url)
    spec = header["spec"]
    scale = {"steps": spec.get("train", {}).get("steps"), "seeds": len(spec.get("seeds", [])),
             "trials": spec.get("search", {}).get("trials")}
    return {**header, "scale": scale, "cells": cells, "tasks": _tasks(cells), "papers": paper_rows(cells, scale),
            "summary": summary(cells), "generated_at": datetime.now(timezone.utc).isoformat()[:19]}


def _cost_and_curves(c: dict[str, Any], row, client) -> None:
    """Wall time, throughput, time to target, learning curve and generalisation points of one cell."""
    metric = c["metric"]
    runs = _seed_trials(row)
    timed = [t for t in row.trials if t.started_at and t.ended_at]
    c["wall_s"] = sum((t.ended_at - t.started_at).total_seconds() for t in timed) if timed else None
    c["seed_wall_s"] = stats.median([(t.ended_at - t.started_at).total_seconds() for t in runs if t.started_at and t.ended_at])
    c["steps_per_s"] = stats.median([t.metrics.get("train/steps_per_s") for t in runs])
    curves, hit_s, hit_step = [], [], []
    for t in runs:
        history = sorted(client.get_metric_history(t.mlflow_run_id, f"val/{metric}"), key=lambda m: m.step)
        curves.append({m.step: m.value for m in history})
        hit = next((m for m in history if reached(m.value, c["target"], c["higher_is_better"])), None)
        if hit is not None and t.started_at:
            hit_s.append(max(0.0, (hit.timestamp - _epoch_ms(t.started_at)) / 1000))
            hit_step.append(hit.step)
    steps = sorted({s for curve in curves for s in curve})
    c["learning_curve"] = [[s, stats.median([curve.get(s) for curve in curves])] for s in steps]
    all_hit = runs and len(hit_s) == len(runs)  # the target counts as reached when every seed reached it
    c["time_to_target_s"] = stats.median(hit_s) if all_hit else None
    c["step_to_target"] = stats.median(hit_step) if all_hit else None
    groups = c["test_groups"] if len(c["test_groups"]) > 1 else []
    c["generalisation"] = {g: stats.median([t.metrics.get(f"test/{metric}/{g}") for t in runs]) for g in groups}
    c["dump_run_ids"] = [t.mlflow_run_id for t in runs]


def _tasks(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for task in sorted({c["task"] for c in cells}):
        group = [c for c in cells if c["task"] == task]
        first = group[0]
        out.append({"task": task, "metric": first["metric"], "higher_is_better": first["higher_is_better"],
                    "chance": first["chance"], "target": first["target"]})
    return out


def paper_rows(cells: list[dict[str, Any]], scale: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (paper, loser) the sweep mirrors: published numbers, ours, our scale, the verdict."""
    by_task: dict[str, dict[str, dict[str, Any]]] = {}
    for c in cells:
        by_task.setdefault(c["task"], {})[c["mechanism"]] = c
    rows = []
    for key, paper, losers in applicable({t: set(m) for t, m in by_task.items()}):
        mine = by_task[paper["task"]]
        win = mine[paper["winner"]]
        for loser in losers:
            lose = mine[loser]
            v = stats.verdict(win, lose, win["higher_is_better"], win["chance"], PERFECT.get(win["metric"], 0.0), paper["size"])
            rows.append({
                "paper": key, "source": paper["source"], "setting": paper["setting"], "approximate": paper["approximate"],
                "winner": paper["winner"], "loser": loser, "metric": win["metric"],
                "published_winner": paper["published"][paper["winner"]], "published_loser": paper["published"][loser],
                "paper_size": paper["size"], "ours_winner": fmt(win["value"], win["metric"], win["ci"]),
                "ours_loser": fmt(lose["value"], lose["metric"], lose["ci"]),
                "our_scale": f"params {_count(win['params_count'])} vs {_count(lose['params_count'])}; "
                             f"{scale['steps']} steps; {scale['seeds']} seeds",
                **v,
            })
    return rows


def _count(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2g}M" if n >= 1e6 else f"{n / 1e3:.3g}k" if n >= 1e3 else str(n)


def _names(cells: list[dict[str, Any]]) -> str:
    names = [c["mechanism"] for c in cells]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def summary(cells: list[dict[str, Any]]) -> list[str]:
    """A few sentences per task, generated from the numbers only."""
    lines = []
    for task in sorted({c["task"] for c in cells}):
        group = [c for c in cells if c["task"] == task and c["value"] is not None]
        if not group:
            lines.append(f"{task}: no finished cell.")
            continue
        hib, metric = group[0]["higher_is_better"], group[0]["metric"]
        group.sort(key=lambda c: -c["value"] if hib else c["value"])
        solved = [c for c in group if c["reached_target"]]
        failed = [c for c in group if not c["reached_target"]]

        def vals(cs, metric=metric):
            return ", ".join(fmt(c["value"], metric, c["ci"]) for c in cs)

        target = fmt(group[0]["target"], metric)
        if solved and failed:
            verb = "solves" if len(solved) == 1 else "solve"
            neg = "does not" if len(failed) == 1 else "do not"
            text = f"{_names(solved)} {verb} {task} ({vals(solved)}); {_names(failed)} {neg} ({vals(failed)})."
        elif solved:
            text = f"Every mechanism solves {task} (target {target}): {_names(group)} ({vals(group)})."
        else:
            text = (f"No mechanism solves {task} (target {target}, chance {fmt(group[0]['chance'], metric)}): "
                    + ", ".join(f"{c['mechanism']} {fmt(c['value'], metric, c['ci'])}" for c in group) + ".")
        best = group[0]
        tied = [c for c in group[1:] if c["tie"]]
        if tied:
            text += f" {_names([best, *tied])} are tied for best on {task} (overlapping 95 % intervals)."
        elif len(group) > 1:
            text += f" {best['mechanism']} is best on {task}, clear of {group[1]['mechanism']}."
        lines.append(text)
    return lines


# -- plots -----------------------------------------------------------------------------------------

def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode()


def _axis(labels: list[str]) -> tuple[list[float], str]:
    """x positions and axis name from group labels such as len_20, facts_10 (numbers when they end in one)."""
    nums = [re.search(r"(\d+)$", g) for g in labels]
    prefix = labels[0].rsplit("_", 1)[0] if labels else ""
    if all(nums):
        return [float(m.group(1)) for m in nums], AXIS_NAMES.get(prefix, prefix or "group")
    return list(range(len(labels))), "group"


def plots(data: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """Learning and generalisation curves per task, one line per mechanism, chance as a dashed line."""
    from matplotlib.figure import Figure

    out: dict[str, list[dict[str, str]]] = {"learning": [], "generalisation": []}
    for t in data["tasks"]:
        group = [c for c in data["cells"] if c["task"] == t["task"]]
        scale = 100.0 if t["metric"] in PERCENT else 1.0
        unit = f"{t['metric']}{' (%)' if scale == 100 else ''} {'↑' if t['higher_is_better'] else '↓'}"
        kinds = {"learning": [c for c in group if c["learning_curve"]],
                 "generalisation": [c for c in group if c["generalisation"]]}
        for kind, members in kinds.items():
            if not members:
                continue
            fig = Figure(figsize=(5.4, 3.4))
            ax = fig.add_subplot()
            for c in members:
                if kind == "learning":
                    xs, ys = zip(*c["learning_curve"], strict=True)
                    xlabel = "training step"
                else:
                    labels = list(c["generalisation"])
                    xs, xlabel = _axis(labels)
                    ys = [c["generalisation"][g] for g in labels]
                    ax.set_xticks(xs, [g.rsplit("_", 1)[-1] for g in labels])
                ax.plot(xs, [y * scale if y is not None else float("nan") for y in ys], marker="o", ms=3, label=c["mechanism"])
            ax.axhline(t["chance"] * scale, color="grey", ls="--", lw=1, label="chance")
            split = "validation" if kind == "learning" else "test"
            ax.set(xlabel=xlabel, ylabel=f"{split} {unit}", title=f"{t['task']}: {split} {t['metric']} (median over seeds)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            out[kind].append({"task": t["task"], "png": _png(fig)})
    return out


def heatmaps(data: dict[str, Any], settings: Settings) -> list[dict[str, str]]:
    """One dump heatmap per cell (its most telling trace), already rendered with labelled axes by platform/dumps.py."""
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per image would flood the terminal
    client = MlflowClient(settings.mlflow_uri)
    out = []
    for c in data["cells"]:
        found = ((run, pngs) for run in c["dump_run_ids"]
                 if (pngs := [a.path for a in client.list_artifacts(run, "dumps") if a.path.endswith(".png")]))
        run, pngs = next(found, (None, []))
        if not pngs:
            continue
        rank = {p: next((i for i, k in enumerate(HEATMAP_ORDER) if k in Path(p).stem), len(HEATMAP_ORDER)) for p in pngs}
        chosen = min(sorted(pngs), key=rank.__getitem__)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(client.download_artifacts(run, chosen, tmp))
            png = base64.b64encode(local.read_bytes()).decode()
        out.append({"mechanism": c["mechanism"], "task": c["task"], "trace": Path(chosen).stem, "png": png,
                    "others": len(pngs) - 1})
    return out


# -- renderers -------------------------------------------------------------------------------------

def matrix(data: dict[str, Any]) -> tuple[list[str], list[str], dict[tuple[str, str], dict[str, Any]]]:
    mechanisms = sorted({c["mechanism"] for c in data["cells"]})
    tasks = [t["task"] for t in data["tasks"]]
    return mechanisms, tasks, {(c["mechanism"], c["task"]): c for c in data["cells"]}


def mark(c: dict[str, Any]) -> str:
    return "best, tied" if c["best"] and c["tie"] else "best" if c["best"] else "tied with best" if c["tie"] else ""


def render_html(data: dict[str, Any], settings: Settings) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(resources.files("amlab.dashboards").joinpath(TEMPLATE).read_text())
    mechanisms, tasks, grid = matrix(data)
    return template.render(
        d=data, mechanisms=mechanisms, grid=grid, task_info={t["task"]: t for t in data["tasks"]},
        plots=plots(data), heatmaps=heatmaps(data, settings), fmt=fmt, count=_count, mark=mark, secs=_secs,
        min_trials=MIN_IMPORTANCE_TRIALS, target_fraction=TARGET_FRACTION,
    )


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min"


def render_md(data: dict[str, Any]) -> str:
    mechanisms, tasks, grid = matrix(data)
    info = {t["task"]: t for t in data["tasks"]}
    lines = [f"# amctl report: {data['name']}", "",
             f"Sweep status {data['status']}; {data['scale']['seeds']} seeds, {data['scale']['steps']} steps, "
             f"{data['scale']['trials']} search trials per cell. Values: median over seeds of the test metric "
             "[95 % bootstrap interval]; **bold** = best per task, ≈ = tied with the best (overlapping intervals).", "",
             "## Summary", "", *[f"- {s}" for s in data["summary"]], "", "## Leaderboard", ""]
    head = [f"{t} ({info[t]['metric']} {'↑' if info[t]['higher_is_better'] else '↓'})" for t in tasks]
    lines += ["| mechanism | " + " | ".join(head) + " |", "|---" * (len(tasks) + 1) + "|"]
    for m in mechanisms:
        row = []
        for t in tasks:
            c = grid.get((m, t))
            if c is None:
                row.append("")
                continue
            text = fmt(c["value"], c["metric"], c["ci"])
            row.append(f"**{text}**" if c["best"] else f"≈ {text}" if c["tie"] else text)
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    lines.append("| *chance* | " + " | ".join(fmt(info[t]["chance"], info[t]["metric"]) for t in tasks) + " |")
    lines += ["", "## Cells", "", "| mechanism | task | value | n | params | state | wall | steps/s | time to target | "
              "trial spread | status |", "|---" * 11 + "|"]
    for c in data["cells"]:
        lines.append(f"| {c['mechanism']} | {c['task']} | {fmt(c['value'], c['metric'], c['ci'])} | {c['n_seeds']} | "
                     f"{_count(c['params_count'])} | {c['state_size'] if c['state_size'] is not None else '-'} | "
                     f"{_secs(c['wall_s'])} | {c['steps_per_s'] or 0:.1f} | {_secs(c['time_to_target_s'])} | "
                     f"{fmt(c['trial_spread'], c['metric'])} | {c['status']} |")
    if data["papers"]:
        lines += ["", "## Paper vs ours", "", "| paper | setting | published | ours | our scale | verdict |", "|---" * 6 + "|"]
        for p in data["papers"]:
            approx = " (approx.)" if p["approximate"] else ""
            lines.append(f"| {p['source']} | {p['setting']}{approx} | {p['winner']} {p['published_winner']}; "
                         f"{p['loser']} {p['published_loser']} | {p['winner']} {p['ours_winner']}; {p['loser']} "
                         f"{p['ours_loser']} | {p['our_scale']} | **{p['verdict']}**: {p['detail']} |")
    lines += ["", "## Hyperparameter importances (Optuna, fANOVA)", ""]
    for c in data["cells"]:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in c["importances"].items()) or c["importance_note"]
        lines.append(f"- {c['mechanism']} × {c['task']}: {shown}")
    lines += ["", f"Generated {data['generated_at']} UTC from MLflow run {data['mlflow_run_id']}; "
              "curves and heatmaps are in the HTML report.", ""]
    return "\n".join(lines)


CSV_FIELDS = ("mechanism", "task", "metric", "higher_is_better", "value", "ci_low", "ci_high", "n_seeds", "best", "tie",
              "chance", "target", "reached_target", "params_count", "state_size", "wall_s", "seed_wall_s", "steps_per_s",
              "time_to_target_s", "step_to_target", "trial_spread", "status", "config_hash", "mlflow_run_id")


def render_csv(data: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(data["cells"])
    return buf.getvalue()


def render_json(cells: list[dict[str, Any]]) -> str:
    return json.dumps([{k: v for k, v in c.items() if k != "ci"} for c in cells], indent=1, default=str)


def write(settings: Settings, name: str, out_dir: Path, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Write report.<fmt> for each format into out_dir; return the paths."""
    data = collect(settings, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    render = {"html": lambda: render_html(data, settings), "md": lambda: render_md(data),
              "csv": lambda: render_csv(data), "json": lambda: render_json(data["cells"])}
    paths = []
    for f in formats:
        path = out_dir / f"report.{f}"
        path.write_text(render[f](), encoding="utf-8")
        paths.append(path)
    return paths


def publish(settings: Settings, name: str, run_id: str) -> list[str]:
    """Build every format and log it under `report/` of the sweep's MLflow run."""
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory(prefix="amctl-report-") as tmp:
        paths = write(settings, name, Path(tmp))
        MlflowClient(settings.mlflow_uri).log_artifacts(run_id, tmp, "report")
    return [f"report/{p.name}" for p in paths]


def compare(store: Store, a: str, b: str) -> list[dict[str, Any]]:
    """Cells of either sweep side by side (matched by mechanism and task), with the difference B - A."""
    left = {(c["mechanism"], c["task"]): c for c in leaderboard(store, a)}
    right = {(c["mechanism"], c["task"]): c for c in leaderboard(store, b)}
    rows = []
    for key in sorted(set(left) | set(right)):
        x, y = left.get(key), right.get(key)
        ref = x or y
        both = x is not None and y is not None and x["value"] is not None and y["value"] is not None
        rows.append({
            "mechanism": key[0], "task": key[1], "metric": ref["metric"], "higher_is_better": ref["higher_is_better"],
            "a": x and x["value"], "a_ci": x and x["ci"], "b": y and y["value"], "b_ci": y and y["ci"],
            "difference": y["value"] - x["value"] if both else None,
            "overlap": stats.overlaps(x["ci"], y["ci"]) if both and x["ci"] and y["ci"] else None,
        })
    return rows
