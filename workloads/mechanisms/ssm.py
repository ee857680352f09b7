"""Mamba (Gu & Dao 2023): a selective state-space model, the S6 scan with a short causal conv and a gate.

A linear time-invariant SSM cannot choose what to remember; making the step size Delta and the
projections B, C functions of the input lets each token decide how much it is written (Delta large:
reset to it) or skipped (Delta small: keep the state).  The scan h_t = exp(Delta_t A) h_{t-1} +
Delta_t B_t x_t runs as a log-depth parallel scan inside chunks; the step-by-step loop is the
reference it is tested against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn
from torch.autograd.function import once_differentiable

from amlab.workloads.mechanisms._mixers import MixerParams, MixerStack, ShortConv, compute_dtype
from amlab.workloads.registry import knob, mechanism

CHUNK = 64


def selective_scan_loop(a, b, h=None):
    """Reference: h_t = a_t * h_{t-1} + b_t along dim 1.  a, b (B, T, ...); h (B, ...) or None (zeros).

    Returns (every h_t (B, T, ...), h_T).
    """
    h = torch.zeros_like(b[:, 0]) if h is None else h
    hs = []
    for t in range(b.shape[1]):
        h = a[:, t] * h + b[:, t]
        hs.append(h)
    return torch.stack(hs, 1), h


def _scan(a, b, h, chunk):
    """h_t = a_t h_{t-1} + b_t (no autograd): a Hillis-Steele scan within chunks, sequential across them.

    After the step with offset s, position t holds the composition of steps t - 2s + 1 .. t:
    (a, b)_t <- (a_t a_{t-s}, b_t + a_t b_{t-s}).  Only products of decays in (0, 1]: stable.
    """
    hs = torch.empty_like(b)
    for i in range(0, b.shape[1], chunk):
        ac, bc = a[:, i : i + chunk].clone(), b[:, i : i + chunk].clone()
        bc[:, 0] += ac[:, 0] * h  # fold the carried state into the chunk's first step
        s = 1
        while s < bc.shape[1]:
            bc[:, s:] += ac[:, s:] * bc[:, :-s]  # the product is a new tensor, so the overlap is safe
            ac[:, s:] = ac[:, s:] * ac[:, :-s]
            s *= 2
        hs[:, i : i + chunk] = bc
        h = bc[:, -1]
    return hs


class _SelectiveScan(torch.autograd.Function):
    """The scan with its adjoint written out: the gradient is the same scan run backwards in time,
    lambda_t = g_t + a_{t+1} lambda_{t+1}; then dL/db_t = lambda_t, dL/da_t = lambda_t h_{t-1}.
    Autograd through the scan's log2(chunk) sliced steps would store each of them and spend most
    of its time zero-filling slice gradients."""

    @staticmethod
    def forward(ctx, a, b, h0, chunk):
        hs = _scan(a, b, h0, chunk)
        ctx.save_for_backward(a, hs, h0)
        ctx.chunk = chunk
        return hs

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        a, hs, h0 = ctx.saved_tensors
        a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], 1)
        lam = _scan(a_next.flip(1), g.flip(1), torch.zeros_like(h0), ctx.chunk).flip(1)
        return lam * torch.cat([h0[:, None], hs[:, :-1]], 1), lam, a[:, 0] * lam[:, 0], None


def selective_scan(a, b, h=None, chunk=CHUNK):
    """selective_scan_loop's result in log2(chunk) vectorised steps per chunk (see _scan, _SelectiveScan)."""
    hs = _SelectiveScan.apply(a, b, torch.zeros_like(b[:, 0]) if h is None else h, chunk)
    return hs, hs[:, -1]


class MambaParams(MixerParams):
    ff_mult: int = knob(0, 0, 8, search=False, doc="feed-forward width / d_model (0: none; the gated block is Mamba's MLP)")
    expand: int = knob(2, 1, 4, search=False, doc="inner width / d_model")
    d_state: int = knob(16, 1, 64, log=True, search=False, doc="state size N per channel")
    d_conv: int = knob(4, 2, 8, search=False, doc="kernel of the short causal depthwise conv")
    dt_min: float = knob(1e-3, 1e-4, 0.5, log=True, search=False, doc="smallest initial step size Delta")
    dt_max: float = knob(0.1, 1e-3, 1.0, log=True, space=(0.01, 1.0), doc="largest initial step size Delta")

    @model_validator(mode="after")
    def _dt_range(self):
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_min ({self.dt_min}) must not exceed dt_max ({self.dt_max})")
        return self


class MambaMixer(nn.Module):
    """x -> (u, z); u -> short conv -> SiLU -> S6 scan (+ D u); times SiLU(z); project back."""

    def __init__(self, p: MambaParams):
        super().__init__()
        E, N = p.expand * p.d_model, p.d_state
        self.E, self.N, self.rank = E, N, math.ceil(p.d_model / 16)
        self.in_proj = nn.Linear(p.d_model, 2 * E)
        self.conv = ShortConv(E, p.d_conv)
        self.x_proj = nn.Linear(E, self.rank + 2 * N, bias=False)
        self.dt_proj = nn.Linear(self.rank, E)
        # Delta starts log-uniform in [dt_min, dt_max]: softplus(bias) = dt
        dt = torch.exp(torch.empty(E).uniform_(math.log(p.dt_min), math.log(p.dt_max)))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            nn.init.uniform_(self.dt_proj.weight, -self.rank**-0.5, self.rank**-0.5)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))  # S4D-real: A = -n
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, p.d_model)

    def state_size(self) -> int:
        return self.E * (self.N + self.conv.keep)

    def forward(self, x, state, record: bool):
        tail, h = state if state is not None else (None, None)
        u, z = self.in_proj(x).chunk(2, -1)
        u, tail = self.conv(u, tail)
        u = F.silu(u).to(compute_dtype(x))
        dt, Bm, Cm = self.x_proj(u.to(x.dtype)).to(u.dtype).split([self.rank, self.N, self.N], -1)
        delta = F.softplus(self.dt_proj(dt.to(x.dtype)).to(u.dtype))  # (B, T, E)
        a = torch.exp(delta[..., None] * -torch.exp(self.A_log.to(u.dtype)))  # (B, T, E, N)
        hs, h = selective_scan(a, (delta * u)[..., None] * Bm[:, :, None], h)
        y = (hs @ Cm[..., None])[..., 0] + self.D.to(u.dtype) * u
        gate = F.silu(z)
        traces = {"step_size": delta, "output_gate": gate} if record else {}
        return self.out_proj((y * gate).to(x.dtype)), (tail, h), traces


@mechanism(
    "mamba", family="recurrent", params=MambaParams, modalities=("bits", "tokens", "real", "video"),
    paper="Gu & Dao 2023, Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
)
class Mamba(MixerStack):
    """Selective state space (S6): input-dependent Delta, B, C; a short causal conv before and a SiLU gate after.

    State per layer: expand * d_model channels x (N scan states + d_conv - 1 conv inputs), fixed in T.
    """

    def __init__(self, params: MambaParams):
        super().__init__(params, MambaMixer)
