"""Single Headed Attention RNN (Merity 2019): LSTM blocks, one attention head, "Boom" feed-forward layers."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from amlab.workloads.model import Core
from amlab.workloads.registry import Params, knob, mechanism


class SHARNNParams(Params):
    d_model: int = knob(64, 8, 2048, log=True, search=False, doc="model width")
    layers: int = knob(2, 1, 8, doc="LSTM blocks; the single attention head sits in the penultimate one")


class Boom(nn.Module):
    """d -> mult*d, GELU, then split into `mult` chunks of width d and summed (no second matrix)."""

    def __init__(self, d: int, mult: int = 4):
        super().__init__()
        self.mult = mult
        self.up = nn.Linear(d, mult * d)

    def forward(self, x):
        return F.gelu(self.up(x)).unflatten(-1, (self.mult, x.shape[-1])).sum(-2)


def attend_with_memory(q, k, v, *, explicit: bool):
    """Causal attention where keys/values hold S - T remembered positions before the T queries.

    Query t sees keys 0 .. S - T + t.  SDPA unless the weights are wanted.
    """
    T, S = q.shape[-2], k.shape[-2]
    allowed = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
    if not explicit:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed), None
    scores = (q @ k.transpose(-2, -1)).float() / math.sqrt(q.shape[-1])
    weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    return weights.to(v.dtype) @ v, weights


class SHABlock(nn.Module):
    def __init__(self, d: int, attention: bool):
        super().__init__()
        self.ln_in, self.ln_ff = nn.LayerNorm(d), nn.LayerNorm(d)
        self.rnn = nn.LSTM(d, d, batch_first=True)
        self.attn = nn.ModuleDict(dict(ln=nn.LayerNorm(d), q=nn.Linear(d, d), kv=nn.Linear(d, 2 * d))) if attention else None
        self.boom = Boom(d)

    def forward(self, x, rnn_state, mem, explicit: bool):
        r, rnn_state = self.rnn(self.ln_in(x), rnn_state)
        h = x + r
        weights = None
        if self.attn is not None:
            allh = torch.cat([mem, h.to(mem.dtype)], 1)
            k, v = self.attn.kv(self.attn.ln(allh)).chunk(2, -1)
            a, weights = attend_with_memory(self.attn.q(self.attn.ln(h)), k, v, explicit=explicit)
            h, mem = h + a.to(h.dtype), allh
        return h + self.boom(self.ln_ff(h)), rnn_state, mem, weights


@mechanism(
    "sha_rnn", family="attention", params=SHARNNParams, modalities=("bits", "tokens", "real", "video"),
    paper="Merity 2019, Single Headed Attention RNN: Stop Thinking With Your Head",
)
class SHARNN(Core):
    """Blocks of x + LSTM(LN x), then (penultimate block only) + one causal attention head over all
    positions so far, then + Boom(LN h).

    State: each block's LSTM state and the attention block's remembered inputs (B, M, d), so a
    sequence run in chunks attends over everything before it (memory grows with T).
    """

    def __init__(self, params: SHARNNParams):
        super().__init__(params)
        self.attn_layer = max(0, params.layers - 2)
        self.blocks = nn.ModuleList(SHABlock(params.d_model, i == self.attn_layer) for i in range(params.layers))

    def state_size(self) -> int:
        return 2 * self.params.layers * self.d_model  # plus d_model per earlier step in the attention memory

    def forward(self, x, state=None):
        rnn_states, mem = state if state is not None else ([None] * len(self.blocks), x.new_zeros(x.shape[0], 0, self.d_model))
        new_states = []
        for block, rnn_state in zip(self.blocks, rnn_states, strict=True):
            x, rnn_state, mem, weights = block(x, rnn_state, mem, explicit=self.record)
            new_states.append(rnn_state)
            if weights is not None:
                self._keep(attention=weights)
        return x, (new_states, mem)
