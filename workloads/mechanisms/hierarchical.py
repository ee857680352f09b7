"""Hierarchical attention (Yang et al. 2016): word-level then sentence-level attention pooling, made causal."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from amlab.workloads.model import Core
from amlab.workloads.registry import Params, knob, mechanism


class HierarchicalParams(Params):
    d_model: int = knob(64, 8, 1024, log=True, search=False, doc="encoder width")
    sentence_len: int = knob(8, 1, 256, search=False, doc="words per sentence: the sequence is cut into fixed-size sentences")


def gru_cell(x: torch.Tensor, h: torch.Tensor, gru: nn.GRU) -> torch.Tensor:
    """One step of a one-layer nn.GRU's equations, batched over any leading dims."""
    xr, xz, xn = F.linear(x, gru.weight_ih_l0, gru.bias_ih_l0).chunk(3, -1)
    hr, hz, hn = F.linear(h, gru.weight_hh_l0, gru.bias_hh_l0).chunk(3, -1)
    r, z = (xr + hr).sigmoid(), (xz + hz).sigmoid()
    return (1 - z) * (xn + r * hn).tanh() + z * h


def pool_scores(h: torch.Tensor, proj: nn.Linear, context: torch.Tensor) -> torch.Tensor:
    """u = tanh(W h + b); score = u . u_context (the learned context vector)."""
    return (torch.tanh(proj(h)) @ context.to(h.dtype)).float()


@mechanism(
    "hierarchical_attention", family="attention", params=HierarchicalParams,
    paper="Yang et al. 2016, Hierarchical Attention Networks for Document Classification",
)
class HierarchicalAttention(Core):
    """Words -> GRU within each sentence -> attention pooling against a word context vector -> sentence
    vectors -> GRU over sentences -> attention pooling against a sentence context vector.

    Causal form: the output at step t pools the words of the current sentence
    up to t (a partial sentence vector, fed to the sentence GRU as a
    provisional next step) together with the hidden states of all completed
    sentences.  y_t = W_o [word state_t; document vector_t].  Everything is
    computed for all positions at once with masks (B, sentences, L, L).

    State: (word states of the unfinished sentence (B, pos, d), hidden states
    of all completed sentences (B, J, d)); the sentence GRU state is the last of them.
    """

    def __init__(self, params: HierarchicalParams):
        super().__init__(params)
        d = params.d_model
        self.word_rnn, self.sent_rnn = nn.GRU(d, d, batch_first=True), nn.GRU(d, d, batch_first=True)
        self.word_proj, self.sent_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.word_context = nn.Parameter(torch.randn(d) / math.sqrt(d))
        self.sent_context = nn.Parameter(torch.randn(d) / math.sqrt(d))
        self.out = nn.Linear(2 * d, d)

    def state_size(self) -> int:
        return self.params.sentence_len * self.d_model  # plus d_model per completed sentence

    def forward(self, x, state=None):
        B, T, d = x.shape
        L = self.params.sentence_len
        cur, sents = state if state is not None else (x.new_zeros(B, 0, d), x.new_zeros(B, 0, d))
        pos, J = cur.shape[1], sents.shape[1]

        # word encoder: the unfinished sentence continues from its last word state, the others start at zero
        first = min(T, L - pos)
        word_h0 = cur[:, -1] if pos else x.new_zeros(B, d)
        parts = [cur, self.word_rnn(x[:, :first], word_h0[None].contiguous())[0].to(cur.dtype)]
        rest = x[:, first:]
        if rest.shape[1]:
            n = -(-rest.shape[1] // L)
            padded = F.pad(rest, (0, 0, 0, n * L - rest.shape[1])).reshape(B * n, L, d)
            parts.append(self.word_rnn(padded)[0].reshape(B, n * L, d)[:, : rest.shape[1]].to(cur.dtype))
        hw = torch.cat(parts, 1)  # (B, pos + T, d), starting at a sentence boundary
        N = -(-(pos + T) // L)
        words = F.pad(hw, (0, 0, 0, N * L - pos - T)).view(B, N, L, d)

        # word attention: word l of a sentence pools words 0..l of that sentence
        in_sentence = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
        u = pool_scores(words, self.word_proj, self.word_context)  # (B, N, L)
        word_attn = u[:, :, None, :].masked_fill(~in_sentence, float("-inf")).softmax(-1)  # (B, N, L, L)
        partial = word_attn.to(words.dtype) @ words  # (B, N, L, d) sentence vector so far

        # sentence encoder: GRU over the complete sentence vectors; each partial one is a provisional next step
        h0 = sents[:, -1] if J else x.new_zeros(B, d)
        G = self.sent_rnn(partial[:, :, -1], h0[None].contiguous())[0]  # (B, N, d); the last may be unfinished
        before = torch.cat([h0[:, None], G[:, :-1]], 1)  # sentence state before sentence n
        provisional = gru_cell(partial, before[:, :, None].expand(B, N, L, d), self.sent_rnn)

        # sentence attention over completed sentences (carried, then this chunk's before n) and the current one
        all_sents = torch.cat([sents, G.to(sents.dtype)], 1)  # (B, J + N, d)
        column = torch.arange(J + N, device=x.device)
        current = (column == J + torch.arange(N, device=x.device)[:, None])[None, :, None, :]  # (1, N, 1, J+N)
        earlier = (column < J + torch.arange(N, device=x.device)[:, None])[None, :, None, :]
        s_prev = pool_scores(all_sents, self.sent_proj, self.sent_context)[:, None, None, :]
        s_cur = pool_scores(provisional, self.sent_proj, self.sent_context)[..., None]
        scores = torch.where(current, s_cur, s_prev.masked_fill(~earlier, float("-inf")))
        sent_attn = scores.softmax(-1)  # (B, N, L, J + N)
        doc = (sent_attn.masked_fill(current, 0).to(all_sents.dtype) @ all_sents[:, None]
               + (sent_attn * current).sum(-1, keepdim=True).to(provisional.dtype) * provisional)

        def chunk(t):  # aligned (B, N, L, ...) -> this chunk's positions (B, T, ...)
            return t.reshape(B, N * L, *t.shape[3:])[:, pos : pos + T]

        y = self.out(torch.cat([chunk(words), chunk(doc).to(words.dtype)], -1))
        self._keep(word_attention=chunk(word_attn), sentence_attention=chunk(sent_attn))
        done = (pos + T) // L
        return y, (hw[:, done * L :], torch.cat([sents, G[:, :done].to(sents.dtype)], 1))
