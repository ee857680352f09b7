"""A dump's heatmap as a PNG, drawn with Pillow: labelled axes, title and colour bar, in milliseconds.

A reported trial draws one per trace in its worker as it ends.  Matplotlib took ~0.3 s to import there and
~75 ms a trace to draw, at the end of every launch and on the cores a sweep's other trials train on; this
draws the same picture (first row at the top, as `imshow` does) in a few milliseconds with a ~30 ms import.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE = (600, 450)
PLOT = (72, 40, 482, 394)  # left, top, right, bottom of the matrix
BAR = (500, 518)  # the colour bar's left and right, over the plot's height
# viridis at 0, 1/4, 1/2, 3/4 and 1, linearly interpolated between: perceptually even, and legible in grey
ANCHORS = np.array([(0x44, 0x01, 0x54), (0x3B, 0x52, 0x8B), (0x21, 0x91, 0x8C), (0x5E, 0xC9, 0x62), (0xFD, 0xE7, 0x25)])
LUT = np.stack([np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(ANCHORS)), ANCHORS[:, c]) for c in range(3)],
               axis=1).round().astype(np.uint8)
INK = (0, 0, 0)


@cache
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=13)


def span(matrix: np.ndarray) -> tuple[float, float]:
    """The least and greatest finite values: the colour scale's ends ((0, 0) when there are none)."""
    finite = np.asarray(matrix, dtype=np.float64)[np.isfinite(matrix)]
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)


def colours(matrix: np.ndarray) -> np.ndarray:
    """Each cell's RGB: its value's place between the matrix's least and greatest (NaN: white)."""
    m = np.asarray(matrix, dtype=np.float64)
    lo, hi = span(m)
    scaled = np.zeros_like(m) if hi <= lo else (m - lo) / (hi - lo)
    rgb = LUT[(np.nan_to_num(scaled, nan=0.0).clip(0, 1) * 255).round().astype(int)]
    rgb[~np.isfinite(m)] = 255
    return rgb


def ticks(n: int, most: int = 6) -> list[int]:
    """Row or column indices to label: multiples of 1, 2 or 5 × 10^k, at most `most` of them."""
    step = 1
    while math.ceil(n / step) > most:
        step = next(s * 10 ** k for k in range(12) for s in (1, 2, 5) if s * 10 ** k > step)
    return list(range(0, n, step))


def _text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, anchor: str) -> None:
    draw.text(xy, text, fill=INK, font=_font(), anchor=anchor)


def draw(matrix: np.ndarray, title: str, xlabel: str, ylabel: str) -> Image.Image:
    """The heatmap of a 2-D matrix: rows top to bottom against `ylabel`, columns against `xlabel`."""
    rows, cols = matrix.shape
    left, top, right, bottom = PLOT
    image = Image.new("RGB", SIZE, "white")
    image.paste(Image.fromarray(colours(matrix)).resize((right - left, bottom - top), Image.Resampling.NEAREST),
                (left, top))
    pen = ImageDraw.Draw(image)
    pen.rectangle((left - 1, top - 1, right, bottom), outline=INK)
    for i in ticks(cols):
        x = left + (i + 0.5) * (right - left) / cols
        pen.line((x, bottom, x, bottom + 4), fill=INK)
        _text(pen, (x, bottom + 6), str(i), "mt")
    for i in ticks(rows):
        y = top + (i + 0.5) * (bottom - top) / rows
        pen.line((left - 5, y, left - 1, y), fill=INK)
        _text(pen, (left - 7, y), str(i), "rm")
    _text(pen, ((left + right) / 2, bottom + 26), xlabel, "mt")
    _text(pen, ((left + right) / 2, top - 12), title, "mb")
    label = Image.new("RGB", (bottom - top, 18), "white")
    ImageDraw.Draw(label).text(((bottom - top) / 2, 9), ylabel, fill=INK, font=_font(), anchor="mm")
    image.paste(label.rotate(90, expand=True), (8, top))
    # the colour bar: the greatest value at the top
    lo, hi = span(matrix)
    x0, x1 = BAR
    gradient = LUT[np.linspace(255, 0, bottom - top).round().astype(int)][:, None, :].repeat(x1 - x0, axis=1)
    image.paste(Image.fromarray(gradient), (x0, top))
    pen.rectangle((x0 - 1, top - 1, x1, bottom), outline=INK)
    for k in range(5):
        y = bottom - k * (bottom - top) / 4
        pen.line((x1, y, x1 + 4, y), fill=INK)
        _text(pen, (x1 + 7, y), f"{lo + k * (hi - lo) / 4:.3g}", "lm")
    return image


def save(matrix: np.ndarray, path: Path, title: str, xlabel: str, ylabel: str) -> None:
    draw(matrix, title, xlabel, ylabel).save(path, optimize=False)
