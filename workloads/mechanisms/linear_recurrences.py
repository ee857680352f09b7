"""Linear attention, gated linear attention and the delta rule: a matrix memory written by outer products.

Each head keeps S (d_k x d_v), written with k_t^T v_t and read as o_t = q_t S_t (row vectors).  They
differ in how S forgets: never (linear attention), by a data-dependent decay per key dimension (GLA),
or by first erasing what k_t already retrieves (delta rule), the learned successor of fast weights.
Training runs the chunked forms (parallel inside chunks of CHUNK steps, recurrent across them); the
step-by-step loops are the reference they are tested against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from amlab.workloads.mechanisms._mixers import HeadParams, MixerStack, compute_dtype
from amlab.workloads.registry import knob, mechanism

CHUNK = 64
GATED_CHUNK = 16  # a decay costs chunk^2 x dk per chunk (one factor per key dimension): smaller chunks are faster
EPS = 1e-6  # linear attention's normaliser: phi > 0, but exp of a very negative input underflows


def gla_loop(q, k, v, log_a=None, S=None):
    """Reference: S_t = diag(a_t) S_{t-1} + k_t^T v_t, o_t = q_t S_t (a_t = 1 when log_a is None).

    q, k, log_a (B, H, T, dk); v (B, H, T, dv); S (B, H, dk, dv) or None (zeros).  Returns (o, S_T).
    """
    S = q.new_zeros(*q.shape[:-2], q.shape[-1], v.shape[-1]) if S is None else S
    outs = []
    for t in range(q.shape[-2]):
        if log_a is not None:
            S = log_a[..., t, :, None].exp() * S
        S = S + k[..., t, :, None] * v[..., t, None, :]
        outs.append((q[..., t, None, :] @ S)[..., 0, :])
    return torch.stack(outs, -2), S


def decayed_scores(q, k, log_a=None):
    """Causal scores of one chunk from a zero state: sum_d q_td k_sd b_td / b_sd for s <= t, b = cumprod(a)."""
    n = q.shape[-2]
    causal = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    if log_a is None:
        return (q @ k.transpose(-1, -2)).masked_fill(~causal, 0)
    c = log_a.cumsum(-2)
    # exp(c_t - c_s) <= 1 for s <= t; the other half is masked before exp, where it would overflow
    decay = (c[..., :, None, :] - c[..., None, :, :]).masked_fill(~causal[..., None], float("-inf")).exp()
    return torch.einsum("...td,...sd,...tsd->...ts", q, k, decay)


def gla_chunked(q, k, v, log_a=None, S=None, chunk=None):
    """gla_loop's recurrence per chunk: o = (q * b) S_0 + scores v, S_n = diag(b_n) S_0 + (k * b_n / b)^T v.

    chunk: CHUNK steps without a decay, GATED_CHUNK with one, unless given.
    """
    S = q.new_zeros(*q.shape[:-2], q.shape[-1], v.shape[-1]) if S is None else S
    chunk = chunk or (CHUNK if log_a is None else GATED_CHUNK)
    outs = []
    for i in range(0, q.shape[-2], chunk):
        qc, kc, vc = (t[..., i : i + chunk, :] for t in (q, k, v))
        if log_a is None:
            outs.append(qc @ S + decayed_scores(qc, kc) @ vc)
            S = S + kc.transpose(-1, -2) @ vc
            continue
        la = log_a[..., i : i + chunk, :]
        c = la.cumsum(-2)
        outs.append((qc * c.exp()) @ S + decayed_scores(qc, kc, la) @ vc)
        S = c[..., -1, :, None].exp() * S + (kc * (c[..., -1:, :] - c).exp()).transpose(-1, -2) @ vc
    return torch.cat(outs, -2), S


def delta_loop(q, k, v, beta, S=None):
    """Reference delta rule: S_t = S_{t-1} - beta_t k_t^T (k_t S_{t-1} - v_t), o_t = q_t S_t.

    (The column form S <- S - beta (S k - v) k^T, transposed.)  beta (B, H, T) in (0, 1).
    """
    S = q.new_zeros(*q.shape[:-2], q.shape[-1], v.shape[-1]) if S is None else S
    outs = []
    for t in range(q.shape[-2]):
        kt = k[..., t, None, :]  # (B, H, 1, dk)
        S = S - beta[..., t, None, None] * kt.transpose(-1, -2) @ (kt @ S - v[..., t, None, :])
        outs.append((q[..., t, None, :] @ S)[..., 0, :])
    return torch.stack(outs, -2), S


def _ut_system(k, beta):
    """I + tril(diag(beta) K K^T, -1): the writes of a chunk solve this unit lower-triangular system."""
    n = k.shape[-2]
    return torch.eye(n, dtype=k.dtype, device=k.device) + (beta[..., None] * (k @ k.transpose(-1, -2))).tril(-1)


def delta_chunked(q, k, v, beta, S=None, chunk=CHUNK):
    """delta_loop per chunk with the UT transform (Yang et al. 2024).

    The effective writes u_t = beta_t (v_t - k_t S_{t-1}) satisfy (I + tril(beta K K^T, -1)) U =
    beta (V - K S_0), so one triangular solve gives them all; then S_n = S_0 + K^T U and
    o = Q S_0 + tril(Q K^T) U.
    """
    S = q.new_zeros(*q.shape[:-2], q.shape[-1], v.shape[-1]) if S is None else S
    outs = []
    for i in range(0, q.shape[-2], chunk):
        qc, kc, vc = (t[..., i : i + chunk, :] for t in (q, k, v))
        bc = beta[..., i : i + chunk]
        U = torch.linalg.solve_triangular(_ut_system(kc, bc), bc[..., None] * (vc - kc @ S), upper=False, unitriangular=True)
        outs.append(qc @ S + (qc @ kc.transpose(-1, -2)).tril() @ U)
        S = S + kc.transpose(-1, -2) @ U
    return torch.cat(outs, -2), S


def delta_mixing(q, k, beta):
    """From a zero state o = M V with M = tril(Q K^T) (I + tril(beta K K^T, -1))^-1 diag(beta): the values' weights."""
    system = _ut_system(k, beta)
    return (q @ k.transpose(-1, -2)).tril() @ torch.linalg.solve_triangular(
        system, torch.diag_embed(beta), upper=False, unitriangular=True
    )


class HeadMixer(nn.Module):
    """q, k, v projections split into heads (in the compute dtype) and the output projection."""

    def __init__(self, p: HeadParams):
        super().__init__()
        self.heads, self.dh = p.heads, p.d_model // p.heads
        self.qkv, self.out = nn.Linear(p.d_model, 3 * p.d_model), nn.Linear(p.d_model, p.d_model)

    def state_size(self) -> int:
        return self.heads * self.dh * self.dh

    def split(self, x):
        B, T, _ = x.shape
        return self.qkv(x).to(compute_dtype(x)).view(B, T, 3, self.heads, self.dh).permute(2, 0, 3, 1, 4)

    def merge(self, o, x):
        """(B, H, T, dh) -> (B, T, d) in x's dtype."""
        return o.transpose(1, 2).flatten(2).to(x.dtype)


class LinearAttentionMixer(HeadMixer):
    """o_t = phi(q_t) sum_s phi(k_s)^T v_s / (phi(q_t) . sum_s phi(k_s)), phi = elu + 1.

    The normaliser rides along as an extra value column of ones, so S is (dk, dv + 1).
    """

    def state_size(self) -> int:
        return self.heads * self.dh * (self.dh + 1)

    def forward(self, x, S, record: bool):
        q, k, v = self.split(x)
        q, k = F.elu(q) + 1, F.elu(k) + 1
        o, S = gla_chunked(q, k, torch.cat([v, torch.ones_like(v[..., :1])], -1), None, S)
        den = o[..., -1:] + EPS
        traces = {"attention": decayed_scores(q, k) / den} if record else {}  # rows sum to 1 from a zero state
        return self.out(self.merge(o[..., :-1] / den, x)), S, traces


class GLAParams(HeadParams):
    gate_temperature: float = knob(16.0, 1.0, 64.0, log=True, doc="tau in a = sigmoid(g)^(1/tau): larger keeps a nearer 1")
    gate_rank: int = knob(16, 1, 256, log=True, search=False, doc="rank of the forget-gate projection")


class GLAMixer(HeadMixer):
    """S_t = diag(a_t) S_{t-1} + k_t^T v_t with a_t = sigmoid(W2 W1 x_t)^(1/tau) per key dimension;
    output LN(q_t S_t) * swish(W_r x_t) per head (Yang et al. 2024)."""

    def __init__(self, p: GLAParams):
        super().__init__(p)
        self.tau = p.gate_temperature
        self.gate = nn.Sequential(nn.Linear(p.d_model, p.gate_rank, bias=False), nn.Linear(p.gate_rank, p.d_model))
        self.out_gate = nn.Linear(p.d_model, p.d_model)
        self.norm = nn.LayerNorm(self.dh)

    def forward(self, x, S, record: bool):
        B, T, _ = x.shape
        q, k, v = self.split(x)
        k = k * self.dh**-0.5
        log_a = F.logsigmoid(self.gate(x).to(q.dtype)).view(B, T, self.heads, self.dh).transpose(1, 2) / self.tau
        o, S = gla_chunked(q, k, v, log_a, S)
        y = self.merge(self.norm(o), x) * F.silu(self.out_gate(x))
        traces = {"forget_gate": log_a.exp(), "mixing": decayed_scores(q, k, log_a)} if record else {}
        return self.out(y), S, traces


class DeltaNetMixer(HeadMixer):
    """S_t = S_{t-1} - beta_t k_t^T (k_t S_{t-1} - v_t), L2-normalised q and k, beta_t = sigmoid(w_beta x_t) per head."""

    def __init__(self, p: HeadParams):
        super().__init__(p)
        self.beta = nn.Linear(p.d_model, p.heads)
        self.norm = nn.LayerNorm(self.dh)

    def forward(self, x, S, record: bool):
        q, k, v = self.split(x)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        beta = torch.sigmoid(self.beta(x).to(q.dtype)).transpose(1, 2)  # (B, H, T)
        o, S = delta_chunked(q, k, v, beta, S)
        traces = {"write_gate": beta.transpose(1, 2), "mixing": delta_mixing(q, k, beta)} if record else {}
        return self.out(self.merge(self.norm(o), x)), S, traces


MODALITIES = ("bits", "tokens", "real", "video")


@mechanism(
    "linear_attention", family="attention", params=HeadParams, modalities=MODALITIES,
    paper="Katharopoulos et al. 2020, Transformers are RNNs: Fast Autoregressive Transformers with Linear Attention",
)
class LinearAttention(MixerStack):
    """Causal linear attention, phi(x) = elu(x) + 1: softmax attention's kernel made linear, so it is an RNN.

    Sinusoidal positions as in the transformer (its state S cannot tell order apart).  State per layer:
    heads x dk x (dv + 1) (the memory and its normaliser), fixed in T.
    """

    positions = True

    def __init__(self, params: HeadParams):
        super().__init__(params, LinearAttentionMixer)


@mechanism(
    "gla", family="recurrent", params=GLAParams, modalities=MODALITIES,
    paper="Yang et al. 2024, Gated Linear Attention Transformers with Hardware-Efficient Training",
)
class GLA(MixerStack):
    """Gated linear attention: linear attention whose memory decays by a data-dependent gate per key dimension.

    No positions: the decay orders the past.  State per layer: heads x dk x dv.
    """

    def __init__(self, params: GLAParams):
        super().__init__(params, GLAMixer)


@mechanism(
    "deltanet", family="attention", params=HeadParams, modalities=MODALITIES,
    paper="Schlag et al. 2021, Linear Transformers Are Secretly Fast Weight Programmers; "
          "Yang et al. 2024, Parallelizing Linear Transformers with the Delta Rule over Sequence Length",
)
class DeltaNet(MixerStack):
    """Delta-rule fast weights: each write first removes what the key retrieves, S <- S - beta (S k - v) k^T.

    Sinusoidal positions as in the transformer.  State per layer: heads x dk x dv.
    """

    positions = True

    def __init__(self, params: HeadParams):
        super().__init__(params, DeltaNetMixer)
