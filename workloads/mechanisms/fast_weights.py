"""Fast weights (Ba et al. 2016): a decaying Hebbian matrix A attends to the recent past through an inner loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from amlab.workloads.model import Core
from amlab.workloads.registry import Params, knob, mechanism


class FastWeightsParams(Params):
    d_model: int = knob(64, 8, 1024, log=True, search=False, doc="hidden size")
    lam: float = knob(0.95, 0.5, 0.999, doc="decay lambda of the fast-weight matrix")
    eta: float = knob(0.5, 0.01, 1.0, log=True, doc="fast learning rate eta")
    inner_steps: int = knob(1, 0, 5, space=(1, 5),
                            doc="inner-loop steps S; 0 (a plain ReLU RNN) is an explicit ablation, never searched")


WINDOW = 32  # past states attended to one by one; older ones are folded into a materialised A every WINDOW steps


@mechanism(
    "fast_weights", family="attention", params=FastWeightsParams, modalities=("bits", "tokens", "real", "video"),
    paper="Ba et al. 2016, Using Fast Weights to Attend to the Recent Past",
)
class FastWeights(Core):
    """A <- lam A + eta h h^T; h_0 = f(W h + C x), h_{s+1} = f(LN(W h + C x + A h_s)) for S steps; f = ReLU.

    A h_s = eta sum_tau lam^(t-tau) h_tau (h_tau . h_s): attention over the past
    states with dot-product scores.  The loop computes it that way over the last
    WINDOW states and keeps A itself only for older ones (chunkwise, as linear
    attention does): building a d x d matrix per step costs far more than
    attending to a few dozen states.  State: (h, A).
    """

    def __init__(self, params: FastWeightsParams):
        super().__init__(params)
        d = params.d_model
        self.W = nn.Linear(d, d)
        self.C = nn.Linear(d, d, bias=False)
        self.ln = nn.LayerNorm(d)

    def state_size(self) -> int:
        return self.d_model + self.d_model**2

    def fold(self, past: torch.Tensor, A: torch.Tensor | None) -> torch.Tensor:
        """lam^n A + eta sum_i lam^(n-1-i) p_i p_i^T for past = (p_0 .. p_{n-1}) of shape (B, n, d): A after n updates."""
        p, n = self.params, past.shape[1]
        decay = self.decay(n, past)
        folded = (past * decay[:, None]).transpose(1, 2) @ past
        return folded if A is None else folded + p.lam**n * A

    def decay(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """eta lam^(n-1), ..., eta lam^0: the weights of n past states, oldest first."""
        p = self.params
        return p.eta * p.lam ** torch.arange(n - 1, -1, -1, dtype=like.dtype, device=like.device)

    def read(self, v: torch.Tensor, past: torch.Tensor, A: torch.Tensor | None) -> torch.Tensor:
        """A_t v with A_t = fold(past, A), without building A_t: (B, d) -> (B, d)."""
        scores = torch.bmm(past, v[:, :, None]).squeeze(-1) * self.decay(past.shape[1], past)
        out = torch.bmm(scores[:, None, :], past).squeeze(1)
        return out if A is None else out + self.params.lam ** past.shape[1] * torch.bmm(A, v[:, :, None]).squeeze(-1)

    def forward(self, x, state=None):
        p = self.params
        B, T, d = x.shape
        h, A = state if state is not None else (x.new_zeros(B, d), None)  # A None: all zeros, nothing to add
        cx = self.C(x)
        window, outs, norms = [h], [], []  # the states not yet folded into A, oldest first
        for t in range(T):
            if len(window) > WINDOW:
                A, window = self.fold(torch.stack(window[:WINDOW], 1), A), window[WINDOW:]
            past = torch.stack(window, 1)
            z = self.W(window[-1]) + cx[:, t]
            h = F.relu(z)
            for _ in range(p.inner_steps):
                h = F.relu(self.ln(z + self.read(h, past, A)))
            window.append(h)
            outs.append(h)
            if self.record:
                norms.append(torch.linalg.matrix_norm(self.fold(past, A).float()))
        if self.record:
            self._keep(fast_weight_norm=torch.stack(norms, 1))
        return torch.stack(outs, 1), (h, self.fold(torch.stack(window[:-1], 1), A))


def materialised(core: FastWeights, x: torch.Tensor, state=None) -> tuple[torch.Tensor, tuple, torch.Tensor]:
    """The paper's recurrence as written, A built at every step: what the windowed loop is tested and timed against.

    Returns the outputs, the final state (h, A) and ||A_t||_F per step.
    """
    p = core.params
    B, T, d = x.shape
    h, A = state if state is not None else (x.new_zeros(B, d), x.new_zeros(B, d, d))
    outs, norms = [], []
    for t in range(T):
        A = p.lam * A + p.eta * h[:, :, None] * h[:, None, :]
        z = core.W(h) + core.C(x[:, t])
        h = F.relu(z)
        for _ in range(p.inner_steps):
            h = F.relu(core.ln(z + torch.bmm(A, h[:, :, None]).squeeze(-1)))
        outs.append(h)
        norms.append(torch.linalg.matrix_norm(A))
    return torch.stack(outs, 1), (h, A), torch.stack(norms, 1)
