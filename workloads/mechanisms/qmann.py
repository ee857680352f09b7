"""Quantized MANN (Park et al. 2018): an NTM-style memory that still addresses well in b-bit fixed point.

Cosine similarity needs wide accumulators and a division, which overflow
or lose all resolution in fixed point; Q-MANN addresses with a bounded,
Hamming-like similarity instead.  Memory contents, keys, written vectors
and the controller's activations are rounded to b bits in [-1, 1]; the
rounding passes gradients straight through.
"""

from __future__ import annotations

from typing import Literal

import torch

from amlab.workloads.mechanisms.ntm import NTM, NTMParams, cosine_similarity
from amlab.workloads.registry import knob, mechanism


def quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Round clamp(x, -1, 1) to 2^bits evenly spaced levels spanning [-1, 1] (1 bit: sign, {-1, +1}).

    Straight-through: the forward value is quantized, the gradient is the
    identity (d quantize / dx = 1).
    """
    steps = 2**bits - 1
    q = torch.round((x.clamp(-1, 1) + 1) / 2 * steps) / steps * 2 - 1
    return x + (q - x).detach()


def hamming_similarity(memory: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """1 - mean_m |k_m - M_im| / 2 in [0, 1] for entries in [-1, 1]: (B, N, M), (B, H, M) -> (B, H, N).

    For 1-bit (+-1) vectors it is exactly the fraction of agreeing bits;
    for b bits each position counts by how far apart the levels are (bits
    weighted by significance).  Bounded, so beta * sim never overflows.
    """
    return 1 - torch.cdist(key, memory, p=1) / (2 * key.shape[-1])


class QMANNParams(NTMParams):
    bits: Literal[1, 4, 8] = knob(8, choices=(1, 4, 8), doc="fixed-point bits of memory, keys and controller activations")
    similarity: Literal["hamming", "cosine"] = knob(
        "hamming", choices=("hamming", "cosine"), search=False,
        doc="bounded Hamming similarity (Q-MANN) or cosine (plain MANN: an explicit ablation, never searched)",
    )


@mechanism(
    "qmann", family="memory", params=QMANNParams,
    paper="Park et al. 2018, Quantized Memory-Augmented Neural Networks (AAAI)",
)
class QMANN(NTM):
    """Quantized MANN: NTM addressing with a bounded Hamming-like similarity over b-bit memory and controller."""

    def similarity(self, memory, key):
        return hamming_similarity(memory, key) if self.params.similarity == "hamming" else cosine_similarity(memory, key)

    def quantize(self, x):
        return quantize(x, self.params.bits)

    def key(self, raw):
        return quantize(torch.tanh(raw), self.params.bits)
