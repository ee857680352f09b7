"""Neural Turing Machine (Graves et al. 2014) and the memory addressing it shares with Q-MANN and the DNC.

Addressing is a chain of small functions (content -> interpolate -> shift
-> sharpen), each vectorised over batch and heads, so each can be checked
against a hand computation.  Memory arithmetic runs in float32 even under
bf16 autocast: cosine similarities and products of erase factors lose too
much in bf16 over long sequences.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from amlab.workloads.model import Core
from amlab.workloads.registry import Params, knob, mechanism

EPS = 1e-6


def full_precision(x: torch.Tensor):
    """Switch autocast off for the memory arithmetic (callers cast their inputs to float32).

    Entering an autocast context costs as much as a few tensor ops: skipped when autocast is off anyway.
    """
    return torch.autocast(x.device.type, enabled=False) if torch.is_autocast_enabled(x.device.type) else nullcontext()


def cosine_similarity(memory: torch.Tensor, key: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """cos(k_h, M_i) for every head and slot: memory (B, N, M), key (B, H, M) -> (B, H, N).

    The eps sits inside the square roots, so all-zero rows (an empty memory)
    give similarity 0 and finite gradients instead of 0/0.
    """
    dots = key @ memory.transpose(-1, -2)
    k_norm = (key.pow(2).sum(-1) + eps).sqrt()
    m_norm = (memory.pow(2).sum(-1) + eps).sqrt()
    return dots / (k_norm[..., :, None] * m_norm[..., None, :])


def content_weights(memory, key, beta, similarity=cosine_similarity) -> torch.Tensor:
    """softmax_i(beta_h * sim(k_h, M_i)): memory (B, N, M), key (B, H, M), beta (B, H) -> (B, H, N)."""
    return (beta[..., None] * similarity(memory, key)).softmax(-1)


def interpolate(w_content: torch.Tensor, w_prev: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """g * w_content + (1 - g) * w_prev; gate (B, H) in [0, 1]."""
    return torch.lerp(w_prev, w_content, gate[..., None])


def shift(w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Circular convolution w~(i) = sum_j w(i - j) s(j) over offsets j = -R..R.

    w: (..., N); s: (..., 2R+1), s[..., R + j] is the weight of moving by j slots.
    Every shifted copy at once, as a view: w padded circularly by R on each
    side and unfolded into windows of 2R+1; window i holds w(i - R), ..., w(i + R),
    the moves j = R, ..., -R, hence s reversed.  (A gather would cost a scatter in backward.)
    """
    N, S = w.shape[-1], s.shape[-1]
    R = (S - 1) // 2
    padded = torch.cat([w[..., N - R:], w, w[..., :R]], -1) if R else w
    return (padded.unfold(-1, S, 1) * s.flip(-1)[..., None, :]).sum(-1)


def sharpen(w: torch.Tensor, gamma: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """w^gamma / sum_i w_i^gamma, computed as a softmax of gamma * log w (no overflow for large gamma)."""
    return (gamma[..., None] * w.clamp_min(eps).log()).softmax(-1)


def address(memory, w_prev, key, beta, gate, s, gamma, similarity=cosine_similarity) -> torch.Tensor:
    """The NTM's full addressing chain for all heads at once -> (B, H, N), rows summing to 1."""
    w = interpolate(content_weights(memory, key, beta, similarity), w_prev, gate)
    return sharpen(shift(w, s), gamma)


def erase_add(memory: torch.Tensor, w: torch.Tensor, erase: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    """Write with every head: M <- M * prod_h (1 - w_h e_h^T) + sum_h w_h a_h^T.

    memory (B, N, M); w (B, H, N); erase, add (B, H, M).  All heads erase
    before any adds, as in Graves et al. 2014, so the order of heads is moot.
    """
    keep = 1 - w[..., :, None] * erase[..., None, :]  # (B, H, N, M)
    keep = keep.squeeze(1) if keep.shape[1] == 1 else keep.prod(1)
    return torch.baddbmm(memory * keep, w.transpose(-1, -2), add)


def read(memory: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """r_h = sum_i w_h(i) M_i: (B, N, M), (B, H, N) -> (B, H, M)."""
    return w @ memory


class NTMParams(Params):
    d_model: int = knob(64, 8, 2048, log=True, search=False, doc="controller width and output width")
    slots: int = knob(32, 2, 1024, log=True, search=False, doc="memory rows N")
    width: int = knob(16, 2, 512, log=True, search=False, doc="memory row width M")
    read_heads: int = knob(1, 1, 8, space=(1, 2), doc="read heads")
    write_heads: int = knob(1, 1, 8, space=(1, 2), doc="write heads")
    controller: Literal["lstm", "mlp"] = knob("lstm", choices=("lstm", "mlp"), doc="LSTM or feed-forward controller")
    shift_range: int = knob(1, 0, 8, search=False, doc="R: heads may move by -R..R slots per step")

    @model_validator(mode="after")
    def _shifts_fit(self):
        if 2 * self.shift_range + 1 > self.slots:
            raise ValueError(f"2*shift_range+1 ({2 * self.shift_range + 1}) must not exceed slots ({self.slots})")
        return self


@mechanism(
    "ntm", family="memory", params=NTMParams,
    paper="Graves, Wayne & Danihelka 2014, Neural Turing Machines",
)
class NTM(Core):
    """Neural Turing Machine: a controller reads and writes an N x M memory through content and location addressing.

    Per step: the controller sees x_t and the previous reads; every head
    addresses the memory M_{t-1}; read heads read it, then write heads
    erase and add; the output projects [h_t, reads] back to d_model.
    """

    def __init__(self, params: NTMParams):
        super().__init__(params)
        p = params
        d, M = p.d_model, p.width
        self.heads = p.read_heads + p.write_heads
        self.shifts = 2 * p.shift_range + 1
        self.addr_size = M + 3 + self.shifts  # key, beta, gate, gamma, shift weights
        ctrl_in = d + p.read_heads * M
        self.controller = nn.LSTMCell(ctrl_in, d) if p.controller == "lstm" else nn.Linear(ctrl_in, d)
        self.interface = nn.Linear(d, self.heads * self.addr_size + p.write_heads * 2 * M)
        self.out = nn.Linear(d + p.read_heads * M, d)

    def similarity(self, memory, key):
        return cosine_similarity(memory, key)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Identity here; Q-MANN rounds memory, keys and controller activations."""
        return x

    def key(self, raw: torch.Tensor) -> torch.Tensor:
        """Keys are unconstrained for cosine addressing (it ignores their scale); Q-MANN bounds and rounds them."""
        return raw

    def state_size(self) -> int:
        p = self.params
        ctrl = 2 * p.d_model if p.controller == "lstm" else 0
        return ctrl + p.slots * p.width + self.heads * p.slots + p.read_heads * p.width

    def initial_state(self, x: torch.Tensor):
        """Near-empty memory (a constant, Collier & Beel 2018), every head on slot 0, zero reads."""
        p, B = self.params, x.shape[0]
        ctrl = (x.new_zeros(B, p.d_model), x.new_zeros(B, p.d_model)) if p.controller == "lstm" else ()
        memory = x.new_full((B, p.slots, p.width), EPS, dtype=torch.float32)
        w = F.one_hot(x.new_zeros(B, self.heads, dtype=torch.long), p.slots).float()
        return ctrl, memory, w, x.new_zeros(B, p.read_heads, p.width, dtype=torch.float32)

    def control(self, inp, ctrl):
        if self.params.controller == "lstm":
            h, c = self.controller(inp, ctrl)
            return h, (h, c)
        return torch.tanh(self.controller(inp)), ()

    def memory_step(self, h, memory, w_prev):
        """Address with every head, read, then erase-and-add: (B, d) -> reads (B, Hr, M), new memory, weights."""
        p = self.params
        B, M, Hr, Hw = h.shape[0], p.width, p.read_heads, p.write_heads
        with full_precision(h):
            addr, ea = self.interface(h.float()).split([self.heads * self.addr_size, Hw * 2 * M], -1)
            key, beta, gate, gamma, s = addr.view(B, self.heads, -1).split([M, 1, 1, 1, self.shifts], -1)
            w = address(
                memory, w_prev, self.key(key), F.softplus(beta[..., 0]), torch.sigmoid(gate[..., 0]),
                s.softmax(-1), 1 + F.softplus(gamma[..., 0]), self.similarity,
            )
            w_read, w_write = w.split([Hr, Hw], 1)
            erase, add = ea.view(B, Hw, 2 * M).split(M, -1)
            reads = read(memory, w_read)
            memory = self.quantize(erase_add(memory, w_write, torch.sigmoid(erase), self.quantize(torch.tanh(add))))
        return reads, memory, w

    def forward(self, x, state=None):
        B, T, _ = x.shape
        ctrl, memory, w, reads = state if state is not None else self.initial_state(x)
        hs, rs, ws = [], [], []
        for t in range(T):
            h, ctrl = self.control(torch.cat([x[:, t], reads.flatten(1).to(x.dtype)], -1), ctrl)
            h = self.quantize(h)
            reads, memory, w = self.memory_step(h, memory, w)
            hs.append(h)
            rs.append(reads.flatten(1))
            ws.append(w)
        y = self.out(torch.cat([torch.stack(hs, 1), torch.stack(rs, 1).to(x.dtype)], -1))
        if self.record:
            wt = torch.stack(ws, 2)  # (B, H, T, N)
            Hr = self.params.read_heads
            self._keep(read_weights=wt[:, :Hr], write_weights=wt[:, Hr:], memory=memory)
        return y, (ctrl, memory, w, reads)
