"""Introspection dumps: every trial keeps its traces; only a reported trial draws them (Pillow: no trial imports matplotlib)."""

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


def test_a_reported_trial_draws_one_heatmap_per_trace_without_matplotlib():
    assert dump("draw") == "['forget_gate.png', 'read_weights.png', 'traces.npz'] False"


def test_a_heatmap_shows_each_value_at_its_place_in_the_colour_scale(tmp_path):
    """Row 0 at the top and column 0 at the left; the least value is the scale's first colour, the greatest its
    last, one halfway between them its middle; a NaN is white, and the colour bar runs from the greatest down."""
    from PIL import Image

    from amlab.platform import heatmap

    m = np.array([[0.0, 2.0, 4.0], [1.0, np.nan, 3.0]])  # 2 rows, 3 columns
    heatmap.save(m, tmp_path / "h.png", "t", "x", "y")
    image = np.asarray(Image.open(tmp_path / "h.png").convert("RGB"))
    assert image.shape == (heatmap.SIZE[1], heatmap.SIZE[0], 3)
    left, top, right, bottom = heatmap.PLOT

    def cell(r: int, c: int) -> list[int]:
        return image[int(top + (r + 0.5) * (bottom - top) / 2), int(left + (c + 0.5) * (right - left) / 3)].tolist()

    lut = heatmap.LUT.tolist()
    assert cell(0, 0) == lut[0] and cell(0, 2) == lut[255]
    assert cell(0, 1) == lut[128] and cell(1, 0) == lut[64]  # 2 of 0..4: halfway (127.5 rounds to 128); 1: a quarter
    assert cell(1, 1) == [255, 255, 255]
    x = sum(heatmap.BAR) // 2
    assert image[top, x].tolist() == lut[255] and image[bottom - 1, x].tolist() == lut[0]


def test_a_constant_matrix_is_drawn_in_one_colour():
    from amlab.platform import heatmap

    assert (heatmap.colours(np.full((3, 4), 7.0)) == heatmap.LUT[0]).all()


def test_axis_labels_fall_on_round_indices():
    from amlab.platform import heatmap

    assert heatmap.ticks(5) == [0, 1, 2, 3, 4]
    assert heatmap.ticks(7) == [0, 2, 4, 6]
    assert heatmap.ticks(40) == [0, 10, 20, 30]
    assert heatmap.ticks(128) == [0, 50, 100]


def test_traces_round_trip_and_a_matrix_is_the_first_example(tmp_path):
    import torch

    from amlab.platform import dumps

    trace = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)  # batch, heads, query, key
    dumps.write({"attention": trace}, tmp_path, "t", heatmaps=False)
    saved = np.load(tmp_path / "traces.npz")["attention"]
    np.testing.assert_array_equal(saved, trace.numpy())
    np.testing.assert_array_equal(dumps.as_matrix(saved), trace[0].mean(0).numpy())  # heads averaged
