"""Introspection dumps: what a mechanism attended to or read/wrote, as .npz plus labelled heatmaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

AXES = {
    "attention": ("key position", "query position"),
    "gate": ("unit", "time step"),
    "cell": ("unit", "time step"),
    "read": ("memory slot", "time step"),
    "write": ("memory slot", "time step"),
}


def _axes(name: str) -> tuple[str, str]:
    for key, labels in AXES.items():
        if key in name:
            return labels
    return ("dimension", "time step / row")


def as_matrix(t: np.ndarray) -> np.ndarray:
    """The first example's 2-D slice: leading batch index 0, extra dims averaged (e.g. heads)."""
    a = t[0] if t.ndim >= 2 else t[None]
    while a.ndim > 2:
        a = a.mean(0)
    return a if a.ndim == 2 else a[None]


def write(traces: dict[str, torch.Tensor], out_dir: Path, title: str, heatmaps: bool) -> list[Path]:
    """Save all traces to traces.npz and, with `heatmaps`, one PNG heatmap per trace; return the written paths.

    Drawn on bare `Figure`s with fixed margins: no pyplot state machine and no tight_layout pass, which were
    half of a trial's closing second.  Drawing still costs ~75 ms a trace, so search trials, which no report
    shows, keep their traces only, and never import matplotlib (0.24 s and 30 MiB in each of their workers).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = {k: v.float().numpy() for k, v in traces.items()}
    paths = [out_dir / "traces.npz"]
    np.savez_compressed(paths[0], **arrays)
    if not heatmaps:
        return paths
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    for name, arr in arrays.items():
        fig = Figure(figsize=(6, 4.5), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0.11, 0.11, 0.70, 0.80))
        im = ax.imshow(as_matrix(arr), aspect="auto", interpolation="nearest", cmap="viridis")
        xlabel, ylabel = _axes(name)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{title}: {name}")
        fig.colorbar(im, cax=fig.add_axes((0.84, 0.11, 0.03, 0.80)))
        path = out_dir / f"{name}.png"
        fig.savefig(path)
        paths.append(path)
    return paths
