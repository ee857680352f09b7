"""Hyena (Poli et al. 2023): long causal convolutions interleaved with element-wise gates, convolved by FFT.

Attention mixes a sequence with a data-dependent T x T matrix; Hyena builds one as a product of
Toeplitz matrices (convolutions with filters as long as the sequence) and diagonal gates computed
from the input.  The filters are implicit, h(t) = window(t) * FFN(features(t)), so their parameter
count does not grow with T, and an FFT convolves them in O(T log T); the direct convolution is the
reference it is tested against.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from amlab.workloads.mechanisms._mixers import MixerParams, MixerStack, ShortConv, compute_dtype
from amlab.workloads.registry import knob, mechanism

BANDS = 8  # sinusoid frequencies in the filter's features of the lag


def fft_causal_conv(u, h):
    """y_t = sum_{s <= t} h_{t-s} u_s by FFT, zero-padded to 2T so nothing wraps around.  u (B, C, T), h (C, T)."""
    T = u.shape[-1]
    n = 2 * T
    return torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(h, n=n), n=n)[..., :T]


def direct_causal_conv(u, h):
    """Reference for fft_causal_conv: the same sum, one lag at a time."""
    T = u.shape[-1]
    y = torch.zeros_like(u)
    for lag in range(T):
        y[..., lag:] += h[:, lag, None] * u[..., : T - lag]
    return y


class Sin(nn.Module):
    """sin(w x) with a learned frequency per unit: the filter FFN's activation, so filters can be high-frequency."""

    def __init__(self, width: int):
        super().__init__()
        self.freq = nn.Parameter(torch.ones(width))

    def forward(self, x):
        return torch.sin(self.freq * x)


class ImplicitFilter(nn.Module):
    """order x channels filters of any length L: FFN(sinusoids of the lag) times an exponential window.

    The window's decay rate is fixed per channel, spread log-uniformly from 1 % left after 4 lags to
    1 % left after `reach` lags, so channels cover short and long memories from the start.  Features
    depend on the lag only (not on T), so a filter's first L taps are the same whatever the length.
    """

    def __init__(self, channels: int, order: int, width: int, reach: int):
        super().__init__()
        self.order, self.channels = order, channels
        self.register_buffer("omega", torch.logspace(0, -math.log10(reach), BANDS) * math.pi, persistent=False)
        self.register_buffer(
            "rates", torch.logspace(math.log10(math.log(100) / 4), math.log10(math.log(100) / reach), channels), persistent=False
        )
        self.reach = reach
        self.ffn = nn.Sequential(
            nn.Linear(2 * BANDS + 1, width), Sin(width), nn.Linear(width, width), Sin(width), nn.Linear(width, order * channels)
        )

    def forward(self, L: int, dtype: torch.dtype) -> torch.Tensor:
        t = torch.arange(L, device=self.omega.device, dtype=dtype)[:, None]
        wt = t * self.omega.to(dtype)
        feats = torch.cat([t / self.reach, wt.sin(), wt.cos()], -1)
        h = self.ffn(feats.to(self.omega.dtype)).to(dtype).view(L, self.order, self.channels)
        return (h * torch.exp(-t[..., None] * self.rates.to(dtype))).permute(1, 2, 0)  # (order, channels, L)


class HyenaParams(MixerParams):
    order: int = knob(2, 1, 4, space=(1, 3), doc="long convolutions (each followed by a gate) per operator")
    filter_width: int = knob(32, 4, 256, log=True, search=False, doc="hidden width of the implicit filter FFN")
    short_kernel: int = knob(3, 2, 8, search=False, doc="kernel of the short causal conv on the projections")
    reach: int = knob(256, 4, 65536, log=True, space=(16, 4096), doc="lags after which the slowest filter window is at 1 %")


class HyenaMixer(nn.Module):
    """Projections (v, x_1 .. x_N) through a short conv; z = v; z <- x_n * (h_n * z + bias_n z); project back."""

    def __init__(self, p: HyenaParams):
        super().__init__()
        d = p.d_model
        self.d, self.order = d, p.order
        self.in_proj = nn.Linear(d, (p.order + 1) * d)
        self.short = ShortConv((p.order + 1) * d, p.short_kernel)
        self.filter = ImplicitFilter(d, p.order, p.filter_width, p.reach)
        self.bias = nn.Parameter(torch.randn(p.order, d))
        self.out_proj = nn.Linear(d, d)

    def state_size(self) -> int:
        return (self.order + 1) * self.d * self.short.keep  # plus order x d per earlier step: the long convs' inputs

    def forward(self, x, state, record: bool):
        B, T, _ = x.shape
        tail, history = state if state is not None else (None, [None] * self.order)
        proj, tail = self.short(self.in_proj(x), tail)
        dtype = compute_dtype(x)
        z, *gates = proj.to(dtype).split(self.d, -1)
        past = 0 if history[0] is None else history[0].shape[1]
        h = self.filter(past + T, dtype)
        new_history = []
        for n, gate in enumerate(gates):
            full = z if history[n] is None else torch.cat([history[n], z], 1)  # the conv sees every earlier input
            conv = fft_causal_conv(full.transpose(1, 2), h[n])[..., past:].transpose(1, 2)
            new_history.append(full)
            z = gate * (conv + self.bias[n].to(dtype) * z)
        traces = {"gate": torch.stack(gates, 1), "filter": h.transpose(1, 2).expand(B, -1, -1, -1)} if record else {}
        return self.out_proj(z.to(x.dtype)), (tail, new_history), traces


@mechanism(
    "hyena", family="convolution", params=HyenaParams, modalities=("bits", "tokens", "real", "video"),
    paper="Poli et al. 2023, Hyena Hierarchy: Towards Larger Convolutional Language Models",
)
class Hyena(MixerStack):
    """Hyena operator: implicit long causal convolutions (FFT) gated element-wise by projections of the input.

    State per layer: the short conv's last inputs plus every earlier input of the long convolutions,
    which grows with T (a convolution as long as the sequence has to see all of it).
    """

    def __init__(self, params: HyenaParams):
        super().__init__(params, HyenaMixer)
