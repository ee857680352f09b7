"""Recurrent attention model (Mnih et al. 2014): a few glimpses at locations chosen by a stochastic policy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from amlab.workloads.model import Core
from amlab.workloads.registry import Params, knob, mechanism


class RAMParams(Params):
    d_model: int = knob(128, 16, 1024, log=True, search=False, doc="core RNN state size")
    glimpses: int = knob(6, 2, 16, doc="glimpses per image (the first at a learned start location)")
    patch: int = knob(8, 2, 32, search=False, doc="side of the finest retina patch, in pixels")
    scales: int = knob(3, 1, 4, search=False, doc="retina scales, each twice the side of the previous")
    std: float = knob(0.15, 0.01, 0.5, log=True, doc="standard deviation of the Gaussian location policy")
    baseline_weight: float = knob(1.0, 0.0, 10.0, search=False, doc="weight of the baseline's squared error")


def retina(images: torch.Tensor, loc: torch.Tensor, patch: int, scales: int) -> torch.Tensor:
    """(B, C, H, W) images, (B, 2) locations (x, y) in [-1, 1] -> (B, scales, C, patch, patch).

    Scale k covers patch * 2^k pixels around the location, resampled to patch x patch
    (bilinear; zeros outside the image), all scales in one grid_sample.
    """
    B, C, H, W = images.shape
    size = patch * 2.0 ** torch.arange(scales, device=images.device, dtype=torch.float32)  # (S,)
    theta = torch.zeros(B, scales, 2, 3, device=images.device)
    theta[..., 0, 0] = size / W
    theta[..., 1, 1] = size / H
    theta[..., :, 2] = loc.float()[:, None, :]
    grid = F.affine_grid(theta.view(-1, 2, 3), [B * scales, C, patch, patch], align_corners=False)
    src = images.float()[:, None].expand(B, scales, C, H, W).reshape(B * scales, C, H, W)
    return F.grid_sample(src, grid, align_corners=False).view(B, scales, C, patch, patch)


@mechanism(
    "ram", family="visual", params=RAMParams, modalities=("image",), kind="glimpse", recurrent=True,
    paper="Mnih et al. 2014, Recurrent Models of Visual Attention",
)
class RAM(Core):
    """Glimpse sensor -> glimpse net -> ReLU RNN core -> Gaussian location policy, trained with REINFORCE.

    Glimpse net as in the paper: g = ReLU(W_1 ReLU(W_rho rho(x, l)) + W_2 ReLU(W_l l));
    core h_t = ReLU(W_h h_{t-1} + W_g g_t).  The location and baseline heads read a detached h:
    the classification loss trains the glimpse net and core, REINFORCE only the policy (its noisy
    gradient through the core kept a 16x16-canvas run at 29% train accuracy after 400 steps
    where the detached version reached 94%).

    Reward is the negative task loss of each example; a learned baseline
    b_t = w . h_t (fit by squared error) reduces the variance.  Training
    samples l ~ N(mu(h), std^2) clipped to [-1, 1]; evaluation looks at the
    mean mu(h) (deterministic).  `forward(images)` returns the final core
    state (B, d_model); the model's head classifies it.
    """

    def __init__(self, params: RAMParams):
        super().__init__(params)
        d = params.d_model
        self.where = nn.Linear(2, d)
        self.glimpse_what, self.glimpse_where = nn.Linear(d, d), nn.Linear(d, d)
        self.core_h, self.core_g = nn.Linear(d, d), nn.Linear(d, d)
        self.policy = nn.Linear(d, 2)
        self.baseline = nn.Linear(d, 1)
        self.start = nn.Parameter(torch.zeros(2))
        self._log_probs: torch.Tensor | None = None
        self._baselines: torch.Tensor | None = None

    def bind(self, channels: int) -> None:
        """Create the glimpse net's pixel layer once the task's channel count is known (the model calls this)."""
        p = self.params
        self.what = nn.Linear(channels * p.scales * p.patch * p.patch, self.d_model)

    def state_size(self) -> int:
        return self.d_model + 2

    def forward(self, images):
        p = self.params
        B = images.shape[0]
        h = images.new_zeros(B, self.d_model, dtype=self.core_h.weight.dtype)
        loc = self.start.tanh().expand(B, 2)
        sample = self.training and torch.is_grad_enabled()
        log_probs, baselines, locs = [], [], []
        for i in range(p.glimpses):
            locs.append(loc)
            what = F.relu(self.what(retina(images, loc, p.patch, p.scales).flatten(1)))
            g = F.relu(self.glimpse_what(what) + self.glimpse_where(F.relu(self.where(loc))))
            h = F.relu(self.core_h(h) + self.core_g(g))
            if i == p.glimpses - 1:
                break  # the last state is classified; no further location to choose
            mu = self.policy(h.detach()).float().tanh()
            if sample:
                loc = (mu + p.std * torch.randn_like(mu)).clamp(-1, 1).detach()
                log_probs.append(torch.distributions.Normal(mu, p.std).log_prob(loc).sum(-1))
                baselines.append(self.baseline(h.detach()).float().squeeze(-1))
            else:
                loc = mu.detach()
        self._keep(glimpse_locations=torch.stack(locs, 1))
        if log_probs:
            self._log_probs, self._baselines = torch.stack(log_probs, 1), torch.stack(baselines, 1)
        return h

    def auxiliary_loss(self, per_example_loss):
        """REINFORCE with reward -loss: -(r - b_t) log pi(l_t), plus the baseline's squared error."""
        if self._log_probs is None:
            return None
        reward = -per_example_loss.detach().float()[:, None]
        advantage = (reward - self._baselines).detach()
        reinforce = -(advantage * self._log_probs).sum(1).mean()
        fit = F.mse_loss(self._baselines, reward.expand_as(self._baselines))
        self._log_probs = self._baselines = None
        return reinforce + self.params.baseline_weight * fit
