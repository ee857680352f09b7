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

    Drawing (platform/heatmap.py) costs a few milliseconds a trace; search trials, which no report shows, keep
    their traces only.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = {k: v.float().numpy() for k, v in traces.items()}
    paths = [out_dir / "traces.npz"]
    np.savez_compressed(paths[0], **arrays)
    if not heatmaps:
        return paths
    from amlab.platform import heatmap

    for name, arr in arrays.items():
        xlabel, ylabel = _axes(name)
        path = out_dir / f"{name}.png"
        heatmap.save(as_matrix(arr), path, f"{title}: {name}", xlabel, ylabel)
        paths.append(path)
    return paths
