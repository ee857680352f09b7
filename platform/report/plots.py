"""The report's figures: learning and generalisation curves (matplotlib), and one dump heatmap per cell (MLflow).

Figures are returned as base64 PNG strings, so the HTML report stays one
self-contained file.
"""

from __future__ import annotations

import base64
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from amlab.platform.report.summarise import PERCENT
from amlab.platform.settings import Settings

HEATMAP_ORDER = ("attention", "read", "write", "gate", "cell")
AXIS_NAMES = {"len": "test length", "facts": "number of facts", "items": "number of items", "kv": "key-value pairs",
              "pairs": "key-value pairs", "ctx": "context length"}


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


def curves(data: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
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


def axis_plots(data: dict[str, Any]) -> list[dict[str, str]]:
    """The metric against each axis of a variant grid: one figure per task and axis, one panel per other task axis."""
    from matplotlib.figure import Figure

    from amlab.platform.report.axes import views

    out = []
    for v in views(data["cells"]):
        scale = 100.0 if v["metric"] in PERCENT else 1.0
        fig = Figure(figsize=(4.2 * len(v["panels"]) + 0.6, 3.4))
        ticks = [str(x) for x in v["xs"]]
        for i, (panel, lines) in enumerate(v["panels"].items()):
            ax = fig.add_subplot(1, len(v["panels"]), i + 1)
            for line, points in lines.items():
                at = {str(x): c for x, c in points}
                ys = [at[t]["mean"] * scale if t in at and at[t]["mean"] is not None else float("nan") for t in ticks]
                err = [[(at[t]["mean"] - at[t]["ci"][0]) * scale if t in at and at[t]["ci"] else 0 for t in ticks],
                       [(at[t]["ci"][1] - at[t]["mean"]) * scale if t in at and at[t]["ci"] else 0 for t in ticks]]
                ax.errorbar(range(len(ticks)), ys, yerr=err, marker="o", ms=3, capsize=2, label=line)
            ax.axhline(v["chance"] * scale, color="grey", ls="--", lw=1, label="chance")
            ax.axhline(v["target"] * scale, color="green", ls=":", lw=1, label="target")
            ax.set_xticks(range(len(ticks)), ticks)
            ax.set(xlabel=v["axis"], title=f"{v['task']} ({panel})",
                   ylabel=f"test {v['metric']}{' (%)' if scale == 100 else ''} {'↑' if v['higher_is_better'] else '↓'}")
            ax.grid(alpha=0.3)
        fig.axes[0].legend(fontsize=7)
        fig.tight_layout()
        out.append({"task": v["task"], "axis": v["axis"], "png": _png(fig)})
    return out
