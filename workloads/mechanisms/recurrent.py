"""Recurrent baselines: Elman RNN, LSTM and GRU (cuDNN/oneDNN kernels; an explicit loop when recording gates)."""

from __future__ import annotations

import torch
from torch import nn

from amlab.workloads.model import Core
from amlab.workloads.registry import Params, knob, mechanism


class LSTMParams(Params):
    d_model: int = knob(64, 8, 2048, log=True, search=False, doc="hidden size")
    layers: int = knob(1, 1, 8, space=(1, 2), doc="stacked layers")
    forget_bias: float = knob(1.0, -5.0, 5.0, doc="initial forget-gate bias (long memory at init)")


class GRUParams(Params):
    d_model: int = knob(64, 8, 2048, log=True, search=False, doc="hidden size")
    layers: int = knob(1, 1, 8, space=(1, 2), doc="stacked layers")


class RNNParams(Params):
    d_model: int = knob(64, 8, 2048, log=True, search=False, doc="hidden size")
    layers: int = knob(1, 1, 8, space=(1, 2), doc="stacked layers")


@mechanism(
    "rnn", family="recurrent", params=RNNParams,
    paper="Elman 1990, Finding Structure in Time",
)
class ElmanRNN(Core):
    """Elman RNN, h_t = tanh(W x_t + U h_{t-1} + b): the ungated baseline every memory is compared with."""

    def __init__(self, params: RNNParams):
        super().__init__(params)
        self.rnn = nn.RNN(params.d_model, params.d_model, params.layers, nonlinearity="tanh", batch_first=True)

    def state_size(self) -> int:
        return self.params.layers * self.d_model

    def forward(self, x, state=None):
        y, state = self.rnn(x, state)
        self._keep(hidden=y)  # the top layer's hidden states are its whole memory
        return y, state


@mechanism(
    "lstm", family="recurrent", params=LSTMParams, modalities=("bits", "tokens", "real", "video"),
    paper="Hochreiter & Schmidhuber 1997, Long Short-Term Memory; Gers et al. 2000 (forget gate)",
)
class LSTM(Core):
    """LSTM: input/forget/output gates around a linear self-loop cell."""

    def __init__(self, params: LSTMParams):
        super().__init__(params)
        d = params.d_model
        self.rnn = nn.LSTM(d, d, params.layers, batch_first=True)
        with torch.no_grad():
            for layer in range(params.layers):
                getattr(self.rnn, f"bias_ih_l{layer}")[d : 2 * d].fill_(params.forget_bias)
                getattr(self.rnn, f"bias_hh_l{layer}")[d : 2 * d].zero_()

    def state_size(self) -> int:
        return 2 * self.params.layers * self.d_model

    def forward(self, x, state=None):
        if not self.record:
            return self.rnn(x, state)
        return self._explicit(x, state)

    def _explicit(self, x, state):
        """Same equations step by step, keeping the gate activations of the top layer."""
        B, T, d = x.shape
        L = self.params.layers
        h0, c0 = state if state is not None else (x.new_zeros(L, B, d), x.new_zeros(L, B, d))
        hs, cs = [], []
        for layer in range(L):
            w_ih, w_hh = getattr(self.rnn, f"weight_ih_l{layer}"), getattr(self.rnn, f"weight_hh_l{layer}")
            b = getattr(self.rnn, f"bias_ih_l{layer}") + getattr(self.rnn, f"bias_hh_l{layer}")
            xw = x @ w_ih.T + b
            h, c = h0[layer], c0[layer]
            outs, gates = [], []
            for t in range(T):
                i, f, g, o = (xw[:, t] + h @ w_hh.T).chunk(4, -1)
                i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
                c = f * c + i * g
                h = o * c.tanh()
                outs.append(h)
                gates.append(torch.stack([i, f, o, c], 1))
            x = torch.stack(outs, 1)
            hs.append(h)
            cs.append(c)
        g = torch.stack(gates, 2)  # (B, 4, T, d)
        self._keep(input_gate=g[:, 0], forget_gate=g[:, 1], output_gate=g[:, 2], cell=g[:, 3])
        return x, (torch.stack(hs), torch.stack(cs))


@mechanism(
    "gru", family="recurrent", params=GRUParams, modalities=("bits", "tokens", "real", "video"),
    paper="Cho et al. 2014, Learning Phrase Representations using RNN Encoder-Decoder",
)
class GRU(Core):
    """GRU: reset and update gates; the update gate is an adaptive time constant."""

    def __init__(self, params: GRUParams):
        super().__init__(params)
        self.rnn = nn.GRU(params.d_model, params.d_model, params.layers, batch_first=True)

    def state_size(self) -> int:
        return self.params.layers * self.d_model

    def forward(self, x, state=None):
        if not self.record:
            return self.rnn(x, state)
        B, T, d = x.shape
        h0 = state if state is not None else x.new_zeros(self.params.layers, B, d)
        hs = []
        for layer in range(self.params.layers):
            w_ih, w_hh = getattr(self.rnn, f"weight_ih_l{layer}"), getattr(self.rnn, f"weight_hh_l{layer}")
            b_ih, b_hh = getattr(self.rnn, f"bias_ih_l{layer}"), getattr(self.rnn, f"bias_hh_l{layer}")
            xr, xz, xn = (x @ w_ih.T + b_ih).chunk(3, -1)
            h = h0[layer]
            outs, gates = [], []
            for t in range(T):
                hr, hz, hn = (h @ w_hh.T + b_hh).chunk(3, -1)
                r, z = (xr[:, t] + hr).sigmoid(), (xz[:, t] + hz).sigmoid()
                n = (xn[:, t] + r * hn).tanh()
                h = (1 - z) * n + z * h
                outs.append(h)
                gates.append(torch.stack([r, z], 1))
            x = torch.stack(outs, 1)
            hs.append(h)
        g = torch.stack(gates, 2)
        self._keep(reset_gate=g[:, 0], update_gate=g[:, 1])
        return x, torch.stack(hs)
