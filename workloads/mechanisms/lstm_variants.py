"""LSTMs whose gates also see the cell: diagonal peepholes and Working Memory Connections.

No fused kernel exists for these, so both run an explicit loop over time;
the gate equations are plain functions (`peephole_step`, `wm_step`) so
they can be checked against a hand computation.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from amlab.workloads.mechanisms.recurrent import LSTMParams
from amlab.workloads.model import Core
from amlab.workloads.registry import mechanism


def peephole_step(pre: torch.Tensor, c: torch.Tensor, peep: torch.Tensor):
    """One peephole LSTM step (Gers & Schmidhuber 2000).

    pre: W x + U h + b, (B, 4d) ordered (i, f, g, o); c: previous cell (B, d);
    peep: (3, d) diagonal weights p_i, p_f, p_o.  Input and forget gates see
    c_{t-1}, the output gate sees the new cell c_t.  Returns (h, c, (i, f, o)).
    """
    i, f, g, o = pre.chunk(4, -1)
    i = torch.sigmoid(i + peep[0] * c)
    f = torch.sigmoid(f + peep[1] * c)
    c = f * c + i * torch.tanh(g)
    o = torch.sigmoid(o + peep[2] * c)
    return o * torch.tanh(c), c, (i, f, o)


def wm_step(pre: torch.Tensor, c: torch.Tensor, w_c: torch.Tensor):
    """One LSTM step with Working Memory Connections (Landi et al. 2021).

    Like `peephole_step`, but the cell enters each gate through a full
    matrix and a squashing tanh: i, f get tanh(W_ci c_{t-1}), tanh(W_cf c_{t-1});
    o gets tanh(W_co c_t).  w_c: (3, d, d) = (W_ci, W_cf, W_co).
    """
    i, f, g, o = pre.chunk(4, -1)
    ci, cf = torch.tanh(c @ w_c[:2].transpose(-1, -2))
    i, f = torch.sigmoid(i + ci), torch.sigmoid(f + cf)
    c = f * c + i * torch.tanh(g)
    o = torch.sigmoid(o + torch.tanh(c @ w_c[2].T))
    return o * torch.tanh(c), c, (i, f, o)


class CellGatedLSTM(Core):
    """Stacked LSTM layers run step by step; subclasses say how the cell reaches the gates."""

    def __init__(self, params: LSTMParams, cell_shape: tuple[int, ...]):
        super().__init__(params)
        d, L = params.d_model, params.layers
        self.ih = nn.ModuleList(nn.Linear(d, 4 * d) for _ in range(L))
        self.hh = nn.ModuleList(nn.Linear(d, 4 * d, bias=False) for _ in range(L))
        bound = 1 / math.sqrt(d)
        self.cell_weights = nn.Parameter(torch.empty(L, *cell_shape).uniform_(-bound, bound))
        with torch.no_grad():
            for lin in self.ih:
                lin.bias[d : 2 * d].fill_(params.forget_bias)

    def step(self, pre, c, cell_weights):
        raise NotImplementedError

    def state_size(self) -> int:
        return 2 * self.params.layers * self.d_model

    def forward(self, x, state=None):
        B, T, d = x.shape
        L = self.params.layers
        h0, c0 = state if state is not None else (x.new_zeros(L, B, d), x.new_zeros(L, B, d))
        hs, cs = [], []
        for layer in range(L):
            xw = self.ih[layer](x)  # the input half of every step at once
            w_hh, w_c = self.hh[layer].weight, self.cell_weights[layer]
            h, c = h0[layer], c0[layer]
            outs, gates = [], []
            for t in range(T):
                h, c, igo = self.step(xw[:, t] + h @ w_hh.T, c, w_c)
                outs.append(h)
                if self.record:
                    gates.append(torch.stack([*igo, c], 1))
            x = torch.stack(outs, 1)
            hs.append(h)
            cs.append(c)
        if self.record:
            g = torch.stack(gates, 2)  # (B, 4, T, d), top layer
            self._keep(input_gate=g[:, 0], forget_gate=g[:, 1], output_gate=g[:, 2], cell=g[:, 3])
        return x, (torch.stack(hs), torch.stack(cs))


@mechanism(
    "peephole_lstm", family="recurrent", params=LSTMParams,
    paper="Gers & Schmidhuber 2000, Recurrent Nets that Time and Count",
)
class PeepholeLSTM(CellGatedLSTM):
    """LSTM with diagonal peepholes p⊙c into the gates, for precise timing."""

    def __init__(self, params: LSTMParams):
        super().__init__(params, (3, params.d_model))

    def step(self, pre, c, cell_weights):
        return peephole_step(pre, c, cell_weights)


@mechanism(
    "wm_lstm", family="recurrent", params=LSTMParams,
    paper="Landi et al. 2021, Working Memory Connections for LSTM",
)
class WorkingMemoryLSTM(CellGatedLSTM):
    """LSTM with Working Memory Connections: gates see tanh(W_c c), a learned, bounded view of the cell."""

    def __init__(self, params: LSTMParams):
        super().__init__(params, (3, params.d_model, params.d_model))

    def step(self, pre, c, cell_weights):
        return wm_step(pre, c, cell_weights)
