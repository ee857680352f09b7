"""The report as files: HTML (one self-contained page), Markdown, CSV and JSON; `write` and `publish` them.

Renderers only format what `collect` gathered; `write` is the one place that
collects, draws and renders, and `publish` logs the files to MLflow.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from amlab.platform import stats
from amlab.platform.report import axes
from amlab.platform.report.collect import MIN_IMPORTANCE_TRIALS, collect
from amlab.platform.report.plots import axis_plots, curves, heatmaps
from amlab.platform.report.summarise import TARGET_FRACTION, count, fmt
from amlab.platform.settings import Settings

FORMATS = ("html", "md", "csv", "json")
TEMPLATE = "report.html.j2"  # in dashboards/, installed as the package data of amlab.dashboards
LEVEL = f"{stats.LEVEL * 100:g} %"
LEGEND = (f"Values: mean over seeds of the test metric ± half-width of its {LEVEL} Student-t interval, with n seeds; "
          f"an interval reaching past the metric's range (accuracy and error lie in 0-100 %; bit errors, MSE and bpc "
          f"are >= 0) is cut there and shown by its ends, [low, high]. "
          f"Ranks come from paired comparisons with the task's best mean (same seeds, same evaluation examples): "
          f"best = every other cell is behind it (the {LEVEL} t-interval of the paired difference excludes 0); "
          f"tied = not separated from the best (that interval includes 0). With fewer than {stats.MIN_SEEDS} "
          f"paired seeds a task is not ranked: {stats.INSUFFICIENT}.")
ERROR_CHARS = 200
FAILURES_NOTE = ("First line of each error as the store kept it; the end of the traceback is the amctl.error tag of "
                 "the trial's MLflow run (amctl status NAME --json lists the runs).")


def matrix(data: dict[str, Any]) -> tuple[list[str], list[str], dict[tuple[str, str], dict[str, Any]]]:
    mechanisms = sorted({c["mechanism"] for c in data["cells"]})
    tasks = [t["task"] for t in data["tasks"]]
    return mechanisms, tasks, {(c["mechanism"], c["task"]): c for c in data["cells"]}


def ranking(data: dict[str, Any]) -> dict[str, str]:
    """Per task: how its cells were ranked, or why they were not."""
    out = {}
    for t in data["tasks"]:
        notes = {c["rank_note"] for c in data["cells"] if c["task"] == t["task"] and c["mean"] is not None}
        ranked = any(c["best"] for c in data["cells"] if c["task"] == t["task"])
        out[t["task"]] = f"paired t, {LEVEL}" if ranked else " / ".join(sorted(n for n in notes if n)) or "no result"
    return out


def error_line(error: str | None) -> str:
    """The first line of a trial's error, cut to ERROR_CHARS: a table cell states the reason, MLflow keeps the traceback."""
    lines = (error or "").strip().splitlines()
    if not lines:
        return "no error recorded"
    return lines[0] if len(lines[0]) <= ERROR_CHARS else lines[0][:ERROR_CHARS - 1] + "…"


def secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min"


def render_html(data: dict[str, Any], dump_heatmaps: list[dict[str, str]]) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(resources.files("amlab.dashboards").joinpath(TEMPLATE).read_text())
    mechanisms, tasks, grid = matrix(data)
    return template.render(
        d=data, mechanisms=mechanisms, grid=grid, ranking=ranking(data), plots=curves(data), heatmaps=dump_heatmaps,
        axis_plots=axis_plots(data), capacity=axes.capacity(data["cells"]),
        fmt=fmt, count=count, secs=secs, error_line=error_line, failures_note=FAILURES_NOTE, legend=LEGEND, level=LEVEL,
        min_seeds=stats.MIN_SEEDS, min_trials=MIN_IMPORTANCE_TRIALS, target_fraction=TARGET_FRACTION,
    )


def _board_cell(c: dict[str, Any] | None) -> str:
    if c is None:
        return ""
    text = f"{fmt(c['mean'], c['metric'], c['ci'])} (n={c['n_seeds']})"
    return f"**{text}**" if c["best"] else f"≈ {text}" if c["tie"] else text


def render_md(data: dict[str, Any]) -> str:
    mechanisms, tasks, grid = matrix(data)
    info = {t["task"]: t for t in data["tasks"]}
    lines = [f"# amctl report: {data['name']}", "",
             f"Sweep status {data['status']}; {data['scale']['seeds']} seeds, {data['scale']['steps']} steps, "
             f"{data['scale']['trials']} search trials per cell. {LEGEND} **Bold** = best, ≈ = tied with the best.", "",
             "## Summary", "", *[f"- {s}" for s in data["summary"]], "", "## Leaderboard", ""]
    head = [f"{t} ({info[t]['metric']} {'↑' if info[t]['higher_is_better'] else '↓'})" for t in tasks]
    lines += ["| mechanism | " + " | ".join(head) + " |", "|---" * (len(tasks) + 1) + "|"]
    lines += [f"| {m} | " + " | ".join(_board_cell(grid.get((m, t))) for t in tasks) + " |" for m in mechanisms]
    lines.append("| *chance* | " + " | ".join(fmt(info[t]["chance"], info[t]["metric"]) for t in tasks) + " |")
    ranks = ranking(data)
    lines.append("| *ranking* | " + " | ".join(ranks[t] for t in tasks) + " |")
    lines += ["", "## Cells", "", f"| mechanism | task | mean ± {LEVEL} t-interval | n | median | params | state | wall | "
              "steps/s | time to target (slowest seed) | trial spread (val) | status |", "|---" * 12 + "|"]
    for c in data["cells"]:
        lines.append(f"| {c['mechanism']} | {c['task']} | {fmt(c['mean'], c['metric'], c['ci'])} | {c['n_seeds']} | "
                     f"{fmt(c['value'], c['metric'])} | {count(c['params_count'])} | "
                     f"{c['state_size'] if c['state_size'] is not None else '-'} | {secs(c['wall_s'])} | "
                     f"{c['steps_per_s'] or 0:.1f} | {secs(c['time_to_target_s'])} | "
                     f"{fmt(c['trial_spread'], c['metric'])} | {c['status']} |")
    if data["failures"]:
        lines += ["", "## Failed trials", "", FAILURES_NOTE, "", "| mechanism | task | seed | phase | status | error |",
                  "|---" * 6 + "|"]
        for f in data["failures"]:
            error = error_line(f["error"]).replace("|", r"\|")  # a bare | would end the cell
            lines.append(f"| {f['mechanism']} | {f['task']} | {f['seed']} | {f['phase']} | {f['status']} | {error} |")
    lines += axes.render_md(data["cells"])
    if data["papers"]:
        lines += ["", "## Paper vs ours", "", "Only the direction and rough size of a gap are judged, and only where "
                  "our setting is the paper's; elsewhere the row says *different setting* and shows both.", "",
                  "| paper | paper's setting | our setting | published | ours | parameters (paper; ours) | verdict |",
                  "|---" * 7 + "|"]
        for p in data["papers"]:
            notes = " ".join(x for x in ("(approx.)" if p["approximate"] else "", p["note"]) if x)
            differences = "; ".join(p["differences"])
            lines.append(
                f"| {p['source']} {notes} | {p['paper_setting']} ({p['paper_metric']}; gap {p['paper_size']}) | "
                f"{p['our_setting']} ({p['metric']}) | {p['winner']} {p['published_winner']}; {p['loser']} "
                f"{p['published_loser']} | {p['winner']} {p['ours_winner']}; {p['loser']} {p['ours_loser']} | "
                f"paper: {p['paper_params']}; ours: {p['our_scale']} | **{p['verdict']}**: {p['detail']}"
                + (f" — differences: {differences}" if differences else "") + " |")
    lines += ["", "## Hyperparameter importances (Optuna, fANOVA)", ""]
    for c in data["cells"]:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in c["importances"].items()) or c["importance_note"]
        lines.append(f"- {c['mechanism']} × {c['task']}: {shown}")
    lines += ["", f"Generated {data['generated_at']} UTC from MLflow run {data['mlflow_run_id']}; "
              "curves and heatmaps are in the HTML report.", ""]
    return "\n".join(lines)


CSV_FIELDS = ("mechanism", "task", "mechanism_name", "task_name", "mechanism_variant", "task_variant",
              "metric", "higher_is_better", "mean", "ci_low", "ci_high", "ci_label", "n_seeds",
              "value", "best", "tie", "rank_note", "chance", "target", "reached_target", "params_count", "state_size",
              "wall_s", "seed_wall_s", "steps_per_s", "time_to_target_s", "step_to_target", "trial_spread", "status",
              "config_hash", "mlflow_run_id")


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
    render = {"html": lambda: render_html(data, heatmaps(data, settings)), "md": lambda: render_md(data),
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
