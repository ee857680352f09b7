"""Differentiable Neural Computer (Graves et al. 2016): allocation by usage, temporal links, read modes.

Each update of the paper's Methods section is one function here (usage,
allocation, precedence, link), vectorised over batch and heads.  Memory
arithmetic runs in float32 under bf16 autocast (products of usages and
link decays lose too much in bf16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from amlab.workloads.mechanisms.ntm import EPS, content_weights, erase_add, full_precision, read
from amlab.workloads.model import Core
from amlab.workloads.registry import Params, knob, mechanism


def update_usage(usage, write_w, read_w, free) -> torch.Tensor:
    """u_t = (u + w^w - u * w^w) * psi, psi = prod_r (1 - f_r w^r_r).

    usage, write_w (B, N) from the previous step; read_w (B, R, N) previous read weights; free (B, R).
    """
    psi = (1 - free[..., None] * read_w).prod(1)
    return (usage + write_w - usage * write_w) * psi


def allocation(usage: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """a[phi_j] = (1 - u[phi_j]) * prod_{i<j} u[phi_i], phi = slots sorted by increasing usage.

    Freest slot first; usage is lifted by eps so all-full memories still
    have gradients (DeepMind's implementation does the same).
    """
    u = eps + (1 - eps) * usage
    sorted_u, order = torch.sort(u, dim=-1, stable=True)
    before = torch.cumprod(torch.cat([torch.ones_like(sorted_u[..., :1]), sorted_u[..., :-1]], -1), -1)
    return torch.zeros_like(u).scatter(-1, order, (1 - sorted_u) * before)


def update_precedence(precedence: torch.Tensor, write_w: torch.Tensor) -> torch.Tensor:
    """p_t = (1 - sum_i w^w_i) p_{t-1} + w^w: where the last write went."""
    return (1 - write_w.sum(-1, keepdim=True)) * precedence + write_w


def update_link(link: torch.Tensor, precedence: torch.Tensor, write_w: torch.Tensor) -> torch.Tensor:
    """L[i, j] <- (1 - w_i - w_j) L[i, j] + w_i p_j with a zero diagonal; p is the *previous* precedence."""
    w_i, w_j = write_w[..., :, None], write_w[..., None, :]
    link = (1 - w_i - w_j) * link + w_i * precedence[..., None, :]
    return link * (1 - torch.eye(link.shape[-1], device=link.device, dtype=link.dtype))


class DNCParams(Params):
    d_model: int = knob(64, 8, 2048, log=True, search=False, doc="controller width and output width")
    slots: int = knob(32, 2, 512, log=True, search=False, doc="memory rows N (the link matrix is N x N)")
    width: int = knob(16, 2, 512, log=True, search=False, doc="memory row width W")
    read_heads: int = knob(2, 1, 8, doc="read heads R")


@mechanism(
    "dnc", family="memory", params=DNCParams,
    paper="Graves et al. 2016, Hybrid computing using a neural network with dynamic external memory (Nature)",
)
class DNC(Core):
    """Differentiable Neural Computer: LSTM controller, one write head with usage-based allocation, R read heads.

    Read heads mix backward, content and forward weightings (read modes),
    the latter two following the temporal link matrix in write order.
    """

    def __init__(self, params: DNCParams):
        super().__init__(params)
        d, W, R = params.d_model, params.width, params.read_heads
        self.controller = nn.LSTMCell(d + R * W, d)
        # read keys, read strengths, write key, write strength, erase, write vector, free gates, 2 gates, read modes
        self.split = [R * W, R, W, 1, W, W, R, 1, 1, 3 * R]
        self.interface = nn.Linear(d, sum(self.split))
        self.out = nn.Linear(d + R * W, d)

    def state_size(self) -> int:
        p = self.params
        N, W, R = p.slots, p.width, p.read_heads
        # controller (h, c), memory, usage, link, precedence, read weights, write weights, reads
        return 2 * p.d_model + N * W + N + N * N + N + R * N + N + R * W

    def initial_state(self, x):
        p, B = self.params, x.shape[0]
        N, W, R = p.slots, p.width, p.read_heads
        z = dict(device=x.device, dtype=torch.float32)
        ctrl = (x.new_zeros(B, p.d_model), x.new_zeros(B, p.d_model))
        memory = (torch.zeros(B, N, W, **z), torch.zeros(B, N, **z), torch.zeros(B, N, N, **z), torch.zeros(B, N, **z))
        weights = (torch.zeros(B, R, N, **z), torch.zeros(B, N, **z))
        return ctrl, memory, weights, torch.zeros(B, R, W, **z)

    def memory_step(self, h, memory, weights):
        """One write (allocation + content) then R reads (backward, content, forward) on the new memory."""
        p = self.params
        B, W, R = h.shape[0], p.width, p.read_heads
        M, usage, link, prec = memory
        read_w, write_w = weights
        with full_precision(h):
            kr, br, kw, bw, erase, vec, free, ga, gw, modes = self.interface(h.float()).split(self.split, -1)
            usage = update_usage(usage, write_w, read_w, torch.sigmoid(free))
            ga, gw = torch.sigmoid(ga), torch.sigmoid(gw)
            c_w = content_weights(M, kw[:, None], 1 + F.softplus(bw)).squeeze(1)
            write_w = gw * (ga * allocation(usage) + (1 - ga) * c_w)
            M = erase_add(M, write_w[:, None], torch.sigmoid(erase)[:, None], vec[:, None])
            link = update_link(link, prec, write_w)
            prec = update_precedence(prec, write_w)
            forward, backward = read_w @ link.transpose(-1, -2), read_w @ link
            c_r = content_weights(M, kr.view(B, R, W), 1 + F.softplus(br))
            modes = modes.view(B, R, 3).softmax(-1)
            read_w = modes[..., 0:1] * backward + modes[..., 1:2] * c_r + modes[..., 2:3] * forward
            reads = read(M, read_w)
        return reads, (M, usage, link, prec), (read_w, write_w), modes

    def forward(self, x, state=None):
        T = x.shape[1]
        ctrl, memory, weights, reads = state if state is not None else self.initial_state(x)
        hs, rs, trace = [], [], []
        for t in range(T):
            h, c = self.controller(torch.cat([x[:, t], reads.flatten(1).to(x.dtype)], -1), ctrl)
            ctrl = (h, c)
            reads, memory, weights, modes = self.memory_step(h, memory, weights)
            hs.append(h)
            rs.append(reads.flatten(1))
            if self.record:
                trace.append((weights[0], weights[1][:, None], memory[1], modes))
        y = self.out(torch.cat([torch.stack(hs, 1), torch.stack(rs, 1).to(x.dtype)], -1))
        if self.record:
            read_w, write_w, usage, modes = (torch.stack(z, 2) for z in zip(*trace, strict=True))
            # weightings (B, heads, T, N); usage (B, T, N); modes (B, R, T, 3) = backward, content, forward; final link
            self._keep(read_weights=read_w, write_weights=write_w, usage=usage.transpose(1, 2), addressing_modes=modes,
                       link=memory[2])
        return y, (ctrl, memory, weights, reads)
