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


@mechanism(
    "fast_weights", family="attention", params=FastWeightsParams, modalities=("bits", "tokens", "real", "video"),
    paper="Ba et al. 2016, Using Fast Weights to Attend to the Recent Past",
)
class FastWeights(Core):
    """A <- lam A + eta h h^T; h_0 = f(W h + C x), h_{s+1} = f(LN(W h + C x + A h_s)) for S steps; f = ReLU.

    A h_s = eta sum_tau lam^(t-tau) h_tau (h_tau . h_s): attention over the past
    states with dot-product scores, without storing them.  State: (h, A).
    """

    def __init__(self, params: FastWeightsParams):
        super().__init__(params)
        d = params.d_model
        self.W = nn.Linear(d, d)
        self.C = nn.Linear(d, d, bias=False)
        self.ln = nn.LayerNorm(d)

    def state_size(self) -> int:
        return self.d_model + self.d_model**2

    def step(self, x_proj: torch.Tensor, h: torch.Tensor, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step: update A with the previous state, then the inner loop from the preliminary state."""
        p = self.params
        A = p.lam * A + p.eta * (h[:, :, None] * h[:, None, :])
        z = self.W(h) + x_proj
        hs = F.relu(z)
        for _ in range(p.inner_steps):
            hs = F.relu(self.ln(z + torch.bmm(A, hs[:, :, None]).squeeze(-1)))
        return hs, A

    def forward(self, x, state=None):
        B, T, d = x.shape
        h, A = state if state is not None else (x.new_zeros(B, d), x.new_zeros(B, d, d))
        cx = self.C(x)
        outs, norms = [], []
        for t in range(T):
            h, A = self.step(cx[:, t], h, A)
            outs.append(h)
            if self.record:
                norms.append(torch.linalg.matrix_norm(A.float()))
        if self.record:
            self._keep(fast_weight_norm=torch.stack(norms, 1))
        return torch.stack(outs, 1), (h, A)
