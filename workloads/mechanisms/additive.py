"""Additive (Bahdanau) attention: a GRU whose every step attends over all its previous states."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from amlab.workloads.model import Core
from amlab.workloads.registry import Params, knob, mechanism


class AdditiveParams(Params):
    d_model: int = knob(64, 8, 1024, log=True, search=False, doc="GRU state size")
    attn_dim: int = knob(32, 4, 512, log=True, doc="width of the additive score layer")


def additive_scores(s: torch.Tensor, keys: torch.Tensor, W: nn.Linear, v: nn.Linear) -> torch.Tensor:
    """e_j = v^T tanh(W s + U h_j) for query s (B, d) and precomputed keys U h_j (B, M, a) -> (B, M)."""
    return v(torch.tanh(W(s)[:, None] + keys)).squeeze(-1)


@mechanism(
    "additive_attention", family="attention", params=AdditiveParams, modalities=("bits", "tokens", "real", "video"),
    paper="Bahdanau et al. 2015, Neural Machine Translation by Jointly Learning to Align and Translate",
)
class AdditiveAttention(Core):
    """At step t the previous state s = h_{t-1} scores every earlier state h_j (and the initial state)
    with v^T tanh(W s + U h_j); the context c_t = sum softmax(e)_j h_j joins x_t as the GRU's input;
    y_t = W_o [h_t; c_t].

    State: the memory of all states so far (B, M, d); its last row is h.
    """

    def __init__(self, params: AdditiveParams):
        super().__init__(params)
        d, a = params.d_model, params.attn_dim
        self.W = nn.Linear(d, a, bias=False)
        self.U = nn.Linear(d, a)
        self.v = nn.Linear(a, 1, bias=False)
        self.cell = nn.GRUCell(2 * d, d)
        self.out = nn.Linear(2 * d, d)

    def state_size(self) -> int:
        return self.d_model  # plus d_model per earlier step: the attended memory grows with T

    def forward(self, x, state=None):
        B, T, d = x.shape
        mem = state if state is not None else x.new_zeros(B, 1, d)
        keys = self.U(mem)
        h = mem[:, -1]
        outs, weights = [], []
        for t in range(T):
            alpha = additive_scores(h, keys, self.W, self.v).float().softmax(-1)
            c = torch.bmm(alpha[:, None].to(mem.dtype), mem).squeeze(1)
            h = self.cell(torch.cat([x[:, t], c.to(x.dtype)], -1), h.to(x.dtype))
            mem = torch.cat([mem, h[:, None].to(mem.dtype)], 1)
            keys = torch.cat([keys, self.U(h)[:, None].to(keys.dtype)], 1)
            outs.append(torch.cat([h, c.to(h.dtype)], -1))
            if self.record:
                weights.append(F.pad(alpha, (0, T - 1 - t)))
        if self.record:
            self._keep(attention=torch.stack(weights, 1))
        return self.out(torch.stack(outs, 1)), mem
