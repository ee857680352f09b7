"""Introspection dumps: every trial keeps its traces; only a reported trial draws them, and only it pays for matplotlib."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

PROBE = """
import sys, tempfile, torch
from pathlib import Path
from amlab.platform import dumps
out = Path(tempfile.mkdtemp())
heatmaps = sys.argv[1] == "draw"
paths = dumps.write({"forget_gate": torch.rand(2, 5, 3), "read_weights": torch.rand(2, 5, 4)}, out, "t", heatmaps)
print(sorted(p.name for p in paths), "matplotlib" in sys.modules)
"""


def dump(mode: str) -> str:
    return subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout.strip()


def test_a_search_trial_keeps_its_traces_without_importing_matplotlib():
    assert dump("keep") == "['traces.npz'] False"


def test_a_reported_trial_draws_one_heatmap_per_trace():
    assert dump("draw") == "['forget_gate.png', 'read_weights.png', 'traces.npz'] True"


def test_traces_round_trip_and_a_matrix_is_the_first_example(tmp_path):
    import torch

    from amlab.platform import dumps

    trace = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)  # batch, heads, query, key
    dumps.write({"attention": trace}, tmp_path, "t", heatmaps=False)
    saved = np.load(tmp_path / "traces.npz")["attention"]
    np.testing.assert_array_equal(saved, trace.numpy())
    np.testing.assert_array_equal(dumps.as_matrix(saved), trace[0].mean(0).numpy())  # heads averaged
