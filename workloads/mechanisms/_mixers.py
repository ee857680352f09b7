"""The scaffold the modern sequence mixers share (linear attention, GLA, DeltaNet, Mamba, Hyena).

Each of those papers evaluates its mixer inside the same residual stack (pre-norm blocks, a
feed-forward layer after each mixer unless the mixer already is one, as in Mamba), so the stack is
written once here and a mechanism only supplies its mixer.  Not a mechanism itself: the leading
underscore keeps the registry from importing it as one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import model_validator
from torch import nn

from amlab.workloads.mechanisms.transformer import sinusoid
from amlab.workloads.model import Core
from amlab.workloads.registry import Params, knob


class MixerParams(Params):
    d_model: int = knob(64, 8, 2048, log=True, search=False, doc="model width")
    layers: int = knob(2, 1, 12, space=(1, 4), doc="blocks")
    ff_mult: int = knob(4, 0, 8, search=False, doc="feed-forward width / d_model after each mixer (0: none)")


class HeadParams(MixerParams):
    heads: int = knob(4, 1, 32, search=False, doc="heads (must divide d_model)")

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.d_model % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide d_model ({self.d_model})")
        return self


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """At least float32 for recurrences and scans (bf16 autocast would lose the decays); float64 stays float64."""
    return torch.promote_types(x.dtype, torch.float32)


class ShortConv(nn.Module):
    """Causal depthwise convolution over time; its state is the last kernel - 1 inputs, so chunks join exactly."""

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.keep = kernel - 1
        self.conv = nn.Conv1d(channels, channels, kernel, groups=channels)

    def forward(self, x: torch.Tensor, tail: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, C), tail (B, kernel - 1, C) or None (zeros) -> (y (B, T, C), new tail)."""
        if tail is None:
            tail = x.new_zeros(x.shape[0], self.keep, x.shape[2])
        full = torch.cat([tail.to(x.dtype), x], 1)
        return self.conv(full.transpose(1, 2)).transpose(1, 2), full[:, full.shape[1] - self.keep :]


class MixerStack(Core):
    """`layers` x [x + mixer(LN x), then x + MLP(LN x) when ff_mult > 0].

    A mixer is a module with `forward(x, state, record) -> (y, state, traces)` and `state_size()`.
    State: (steps seen so far, one state per mixer).  The step count places the sinusoidal positions
    of position-blind mixers (`positions = True`) when a sequence arrives in chunks.
    """

    positions = False

    def __init__(self, params: MixerParams, mixer: Callable[[MixerParams], nn.Module]):
        super().__init__(params)
        d, f, n = params.d_model, params.ff_mult, params.layers
        self.mixers = nn.ModuleList(mixer(params) for _ in range(n))
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(n))
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d), nn.Linear(d, f * d), nn.GELU(), nn.Linear(f * d, d)) for _ in range(n if f else 0)
        )

    def state_size(self) -> int:
        return sum(m.state_size() for m in self.mixers)

    def forward(self, x, state=None):
        seen, states = state if state is not None else (torch.zeros((), dtype=torch.long), [None] * len(self.mixers))
        if self.positions:
            x = x + sinusoid(x.shape[1], self.d_model, x.device, offset=int(seen)).to(x.dtype)
        new_states = []
        for i, (mixer, norm) in enumerate(zip(self.mixers, self.norms, strict=True)):
            y, s, traces = mixer(norm(x), states[i], self.record)
            x = x + y.to(x.dtype)
            if self.mlps:
                x = x + self.mlps[i](x)
            new_states.append(s)
            self._keep(**{f"{k}_l{i}": v for k, v in traces.items()})
        return x, (seen + x.shape[1], new_states)
