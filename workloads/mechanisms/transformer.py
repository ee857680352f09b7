"""Causal multi-head self-attention (Vaswani et al. 2017), pre-norm blocks, sinusoidal positions."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from amlab.workloads.model import Core
from amlab.workloads.registry import Params, knob, mechanism


class TransformerParams(Params):
    d_model: int = knob(64, 8, 2048, log=True, search=False, doc="model width")
    heads: int = knob(4, 1, 32, search=False, doc="attention heads (must divide d_model)")
    layers: int = knob(2, 1, 12, space=(1, 4), doc="blocks")
    ff_mult: int = knob(4, 1, 8, search=False, doc="feed-forward width / d_model")
    dropout: float = knob(0.0, 0.0, 0.5, search=False, doc="dropout on attention and residual branches")

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.d_model % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide d_model ({self.d_model})")
        return self


def sinusoid(T: int, d: int, device, offset: int = 0) -> torch.Tensor:
    pos = torch.arange(offset, offset + T, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(T, d, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return pe


def causal_attention(q, k, v, *, explicit: bool, dropout: float = 0.0):
    """softmax(QK^T/sqrt(d_k) + causal mask) V; SDPA (flash/mem-efficient kernels) unless weights are wanted."""
    if not explicit:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout), None
    T, S = q.shape[-2], k.shape[-2]
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
    weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    return F.dropout(weights, dropout, q.requires_grad and dropout > 0) @ v, weights


class Block(nn.Module):
    def __init__(self, p: TransformerParams):
        super().__init__()
        d = p.d_model
        self.heads, self.dropout = p.heads, p.dropout
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, p.ff_mult * d), nn.GELU(), nn.Linear(p.ff_mult * d, d))
        self.drop = nn.Dropout(p.dropout)

    def forward(self, x, explicit: bool):
        B, T, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y, weights = causal_attention(q, k, v, explicit=explicit, dropout=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(B, T, d)))
        return x + self.drop(self.mlp(self.ln2(x))), weights


@mechanism(
    "transformer", family="attention", params=TransformerParams, recurrent=False, modalities=("bits", "tokens", "real", "video"),
    paper="Vaswani et al. 2017, Attention Is All You Need",
)
class Transformer(Core):
    """Causal multi-head scaled dot-product self-attention, pre-norm, sinusoidal positions."""

    def __init__(self, params: TransformerParams):
        super().__init__(params)
        self.blocks = nn.ModuleList(Block(params) for _ in range(params.layers))

    def state_size(self) -> int:
        return 0  # no carried state: it attends over the whole prefix (KV grows with T)

    def forward(self, x, state=None):
        x = x + sinusoid(x.shape[1], self.d_model, x.device).to(x.dtype)
        for i, block in enumerate(self.blocks):
            x, weights = block(x, explicit=self.record)
            if weights is not None:
                self._keep(**{f"attention_l{i}": weights})
        return x, None
