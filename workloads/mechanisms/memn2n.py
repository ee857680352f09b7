"""End-to-end memory network (Sukhbaatar et al. 2015) as a causal sequence core.

Step t's memories are the embedded inputs at positions <= t; the query is
the current input embedded by B.  Each hop attends with the input
embedding A^k, reads with the output embedding C^k and updates the query,
u^{k+1} = u^k + o^k (or H u^k + o^k with layer-wise tying).  All steps'
queries attend at once under a causal mask: no loop over time or slots.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from amlab.workloads.model import Core
from amlab.workloads.registry import Params, knob, mechanism


def hop(u, mem_in, mem_out, mask, ages=None, t_in=None, t_out=None):
    """One memory hop for every query: p = softmax_i(u (m_i + T_A[age])^T), o = sum_i p_i (c_i + T_C[age]).

    u (B, T, d) queries; mem_in, mem_out (B, S, d) embedded memories; mask (T, S) True where allowed;
    ages (T, S) long, t_in / t_out (max_age, d) temporal encodings (or None).  The age terms are
    computed per age bin and gathered, never as a (B, T, S, d) tensor.  Returns (o (B, T, d), p (B, T, S)).
    """
    scores = u @ mem_in.transpose(-1, -2)
    if t_in is not None:
        idx = ages.expand(u.shape[0], -1, -1)
        scores = scores + (u @ t_in.T.to(u.dtype)).gather(-1, idx)
    p = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    o = p @ mem_out.to(p.dtype)
    if t_out is not None:
        per_age = torch.zeros(*p.shape[:2], t_out.shape[0], device=p.device, dtype=p.dtype).scatter_add(-1, idx, p)
        o = o + per_age @ t_out.to(p.dtype)
    return o, p


class MemN2NParams(Params):
    d_model: int = knob(64, 8, 2048, log=True, search=False, doc="embedding width")
    hops: int = knob(3, 1, 8, doc="K memory hops")
    tying: Literal["adjacent", "layerwise", "none"] = knob(
        "adjacent", choices=("adjacent", "layerwise", "none"),
        doc="adjacent: A^{k+1} = C^k, B = A^1; layerwise: one A and C for all hops plus H; none: untied",
    )
    position: Literal["temporal", "none"] = knob(
        "temporal", choices=("temporal", "none"),
        doc="temporal encoding: learned vectors T_A, T_C by a memory's age (t - i), ages >= max_age share the last",
    )
    max_age: int = knob(64, 1, 4096, log=True, search=False, doc="distinct ages with their own temporal vector")


@mechanism(
    "memn2n", family="memory", params=MemN2NParams, recurrent=False,
    paper="Sukhbaatar, Szlam, Weston & Fergus 2015, End-To-End Memory Networks",
)
class MemN2N(Core):
    """End-to-end memory network: K hops of soft attention over the embedded prefix."""

    def __init__(self, params: MemN2NParams):
        super().__init__(params)
        p, d = params, params.d_model
        K = p.hops
        # embeddings E[0..]; hop k attends with E[a[k]] and reads with E[c[k]]; the query uses E[b]
        if p.tying == "adjacent":
            n, self.a, self.c, self.b = K + 1, list(range(K)), list(range(1, K + 1)), 0
        elif p.tying == "layerwise":
            n, self.a, self.c, self.b = 3, [0] * K, [1] * K, 2
        else:
            n, self.a, self.c, self.b = 2 * K + 1, list(range(K)), list(range(K, 2 * K)), 2 * K
        self.embed = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in range(n))
        n_mem = n if p.tying == "adjacent" else n - 1  # B (the last one when untied) embeds queries only
        self.temporal = nn.Parameter(torch.randn(n_mem, p.max_age, d) * 0.1) if p.position == "temporal" else None
        self.H = nn.Linear(d, d, bias=False) if p.tying == "layerwise" else None
        self.out = nn.Linear(d, d)

    def state_size(self) -> int:
        return 0  # no carried state: it attends over the whole prefix, which grows with T

    def forward(self, x, state=None):
        T = x.shape[1]
        pos = torch.arange(T, device=x.device)
        age = (pos[:, None] - pos[None, :]).clamp(0, self.params.max_age - 1)  # (T, S)
        mask = pos[None, :] <= pos[:, None]
        mems = [e(x) for e in self.embed]
        u = mems[self.b]
        for k in range(self.params.hops):
            a, c = self.a[k], self.c[k]
            t_in, t_out = (self.temporal[a], self.temporal[c]) if self.temporal is not None else (None, None)
            o, p = hop(u, mems[a], mems[c], mask, age, t_in, t_out)
            u = (self.H(u) if self.H is not None else u) + o
            self._keep(**{f"attention_hop{k}": p})
        return self.out(u), None
