"""End-to-end memory network (Sukhbaatar et al. 2015) as a causal sequence core.

`memory="sentence"` (the default) is the published model.  The sequence is
cut into sentences of `sentence_len` positions (the bAbI task pads every
sentence, and the question, to 8 tokens, so no separator needs finding).  A
memory is a whole earlier sentence, m_i = sum_j l_j * A x_ij + T_A(i): its
words' embeddings weighted by the position encoding l_j, plus a learned
temporal encoding by the sentence's age (T_A(0) is the most recent
sentence).  The query at position t is the current sentence so far, embedded
by B with the same position encoding: at the question's last word it is the
embedded question, u = sum_j l_j * B q_j.  Each hop attends with A^k, reads
with C^k and updates the query, u^{k+1} = u^k + o^k (or H u^k + o^k with
layer-wise tying); adjacent tying sets A^{k+1} = C^k and B = A^1, temporal
encodings tied alike.  Positions of the first sentence have no memory yet:
their attention is all zero and o = 0.  The answer layer W is the model's
head (not tied to C^K).

`memory="token"` is a separate, token-level variant (not the paper's): every
earlier position is a memory and the query is the current input.

Everything is computed for all positions at once under masks: no loop over
time, sentences or slots.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from amlab.workloads.model import Core
from amlab.workloads.registry import Params, knob, mechanism


def position_encoding(J: int, d: int) -> torch.Tensor:
    """The paper's position encoding (J, d): l_kj = (1 - j/J) - (k/d)(1 - 2j/J), j = 1..J words, k = 1..d dims."""
    j = torch.arange(1, J + 1, dtype=torch.float32)[:, None]
    k = torch.arange(1, d + 1, dtype=torch.float32)[None, :]
    return (1 - j / J) - (k / d) * (1 - 2 * j / J)


def sentence_bags(e: torch.Tensor, L: int, pe: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Embedded words e (B, T, d) in sentences of L positions -> (bags so far (B, T, d), whole sentences (B, S, d)).

    bags so far[t] = sum over the words j <= t of t's sentence of l_j * e_j (the query at t);
    whole[i] = the sum over all L words of sentence i (memory i).  pe None: plain bag of words.
    """
    B, T, d = e.shape
    S = -(-T // L)
    words = F.pad(e, (0, 0, 0, S * L - T)).view(B, S, L, d)
    if pe is not None:
        words = words * pe.to(words.dtype)
    return words.cumsum(2).view(B, S * L, d)[:, :T], words.sum(2)


def sentence_layout(T: int, L: int, max_age: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask (T, S): position t may read sentence i, i.e. i < t's sentence; ages (T, S): t's sentence - 1 - i)."""
    S = -(-T // L)
    current = torch.arange(T, device=device)[:, None] // L
    i = torch.arange(S, device=device)[None, :]
    return i < current, (current - 1 - i).clamp(0, max_age - 1)


def hop(u, mem_in, mem_out, mask, ages=None, t_in=None, t_out=None):
    """One memory hop for every query: p = softmax_i(u (m_i + T_A[age])^T), o = sum_i p_i (c_i + T_C[age]).

    u (B, T, d) queries; mem_in, mem_out (B, S, d) embedded memories; mask (T, S) True where allowed;
    ages (T, S) long, t_in / t_out (max_age, d) temporal encodings (or None).  The age terms are
    computed per age bin and gathered, never as a (B, T, S, d) tensor.  A query with no allowed
    memory gets p = 0 and o = 0.  Returns (o (B, T, d), p (B, T, S)).
    """
    scores = u @ mem_in.transpose(-1, -2)
    if t_in is not None:
        idx = ages.expand(u.shape[0], -1, -1)
        scores = scores + (u @ t_in.T.to(u.dtype)).gather(-1, idx)
    empty = ~mask.any(-1, keepdim=True)  # (T, 1): nothing to read yet; softmax a dummy row, then zero it
    p = scores.masked_fill(~(mask | empty), float("-inf")).softmax(-1).masked_fill(empty, 0.0)
    o = p @ mem_out.to(p.dtype)
    if t_out is not None:
        per_age = torch.zeros(*p.shape[:2], t_out.shape[0], device=p.device, dtype=p.dtype).scatter_add(-1, idx, p)
        o = o + per_age @ t_out.to(p.dtype)
    return o, p


class MemN2NParams(Params):
    d_model: int = knob(64, 8, 2048, log=True, search=False, doc="embedding width")
    memory: Literal["sentence", "token"] = knob(
        "sentence", choices=("sentence", "token"), search=False,
        doc="sentence: memories are whole earlier sentences, the query the current one (the paper); "
            "token: every earlier position is a memory, the query the current input (a separate variant)",
    )
    sentence_len: int = knob(8, 1, 256, search=False,
                             doc="positions per sentence (memory=sentence); bAbI pads every sentence to 8 tokens")
    words: Literal["position", "bag"] = knob(
        "position", choices=("position", "bag"), search=False,
        doc="how a sentence's words combine (memory=sentence): position encoding (the paper's PE) or a plain bag",
    )
    hops: int = knob(3, 1, 8, doc="K memory hops")
    tying: Literal["adjacent", "layerwise", "none"] = knob(
        "adjacent", choices=("adjacent", "layerwise", "none"), search=False,
        doc="adjacent: A^{k+1} = C^k, B = A^1; layerwise: one A and C for all hops plus H; none: untied",
    )
    position: Literal["temporal", "none"] = knob(
        "temporal", choices=("temporal", "none"), search=False,
        doc="temporal encoding: learned vectors T_A, T_C by a memory's age, ages >= max_age share the last",
    )
    max_age: int = knob(64, 1, 4096, log=True, search=False, doc="distinct ages with their own temporal vector")


@mechanism(
    "memn2n", family="memory", params=MemN2NParams, recurrent=False,
    paper="Sukhbaatar, Szlam, Weston & Fergus 2015, End-To-End Memory Networks",
)
class MemN2N(Core):
    """End-to-end memory network: K hops of soft attention over earlier sentences (or positions)."""

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
        sentences = p.memory == "sentence" and p.words == "position"
        self.register_buffer("pe", position_encoding(p.sentence_len, d) if sentences else None, persistent=False)

    def state_size(self) -> int:
        return 0  # no carried state: it attends over the whole prefix, which grows with T

    def forward(self, x, state=None):
        p = self.params
        T = x.shape[1]
        embedded = [e(x) for e in self.embed]
        if p.memory == "sentence":
            bags = [sentence_bags(e, p.sentence_len, self.pe) for e in embedded]
            u, mems = bags[self.b][0], [whole for _, whole in bags]
            mask, age = sentence_layout(T, p.sentence_len, p.max_age, x.device)
        else:
            pos = torch.arange(T, device=x.device)
            age = (pos[:, None] - pos[None, :]).clamp(0, p.max_age - 1)  # (T, S)
            mask = pos[None, :] <= pos[:, None]
            u, mems = embedded[self.b], embedded
        for k in range(p.hops):
            a, c = self.a[k], self.c[k]
            t_in, t_out = (self.temporal[a], self.temporal[c]) if self.temporal is not None else (None, None)
            o, attn = hop(u, mems[a], mems[c], mask, age, t_in, t_out)
            u = (self.H(u) if self.H is not None else u) + o
            self._keep(**{f"attention_hop{k}": attn})
        return self.out(u), None
