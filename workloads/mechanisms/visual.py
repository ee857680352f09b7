"""Visual attention: spatial cores inside the frame encoder (STN, gather-excite, non-local) and attention over frames.

Spatial cores map a feature map (B, C, H, W) -> (B, C, H, W) with C = d_model;
`temporal_attention` is a sequence core over frame embeddings (B, F, d).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from amlab.workloads.model import Core
from amlab.workloads.registry import Params, knob, mechanism

SPATIAL = ("image", "video")


class STNParams(Params):
    d_model: int = knob(32, 8, 512, log=True, search=False, doc="feature channels")
    loc_dim: int = knob(32, 8, 256, log=True, doc="hidden units of the localisation net")


@mechanism(
    "stn", family="visual", params=STNParams, modalities=SPATIAL, kind="spatial", recurrent=False,
    paper="Jaderberg et al. 2015, Spatial Transformer Networks",
)
class STN(Core):
    """Spatial transformer: a localisation net predicts an affine theta; the map is resampled on theta's grid.

    The last localisation layer starts at zero weight and identity bias, so at
    init the transformer is the identity and learns where to look from there.
    """

    def __init__(self, params: STNParams):
        super().__init__(params)
        d, h = params.d_model, params.loc_dim
        self.loc = nn.Sequential(
            nn.Conv2d(d, h, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(16 * h, h), nn.ReLU(), nn.Linear(h, 6),
        )
        with torch.no_grad():
            self.loc[-1].weight.zero_()
            self.loc[-1].bias.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0]))

    def forward(self, x):
        theta = self.loc(x).float().view(-1, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        self._keep(theta=theta, sampling_grid=grid)
        return F.grid_sample(x.float(), grid, align_corners=False).to(x.dtype)


class GatherExciteParams(Params):
    d_model: int = knob(32, 8, 512, log=True, search=False, doc="feature channels")
    extent: int = knob(0, choices=(0, 2, 4, 8), doc="gather extent: 0 = global, else the stride of the gathered map")
    reduction: int = knob(4, 1, 16, doc="channel reduction of the excite MLP")


@mechanism(
    "gather_excite", family="visual", params=GatherExciteParams, modalities=SPATIAL, kind="spatial", recurrent=False,
    paper="Hu et al. 2018, Gather-Excite: Exploiting Feature Context in Convolutional Neural Networks",
)
class GatherExcite(Core):
    """GE-theta+: depthwise strided gather (or global pool), 1x1 MLP, sigmoid gate upsampled onto the map.

    x * sigmoid(excite(gather(x))): each position is re-weighted by the context
    of its extent-neighbourhood (the whole map when extent = 0).
    """

    def __init__(self, params: GatherExciteParams):
        super().__init__(params)
        d, e = params.d_model, params.extent
        steps = int(math.log2(e)) if e else 0
        self.gather = nn.Sequential(*(nn.Conv2d(d, d, 3, stride=2, padding=1, groups=d) for _ in range(steps)))
        hidden = max(1, d // params.reduction)
        self.excite = nn.Sequential(nn.Conv2d(d, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, d, 1))

    def forward(self, x):
        g = self.gather(x) if self.params.extent else x.mean((-2, -1), keepdim=True)
        gate = F.interpolate(self.excite(g).sigmoid(), size=x.shape[-2:], mode="nearest")
        self._keep(excite_gate=gate.mean(1))
        return x * gate


class NonLocalParams(Params):
    d_model: int = knob(32, 8, 512, log=True, search=False, doc="feature channels")
    inner: int = knob(16, 4, 256, log=True, doc="channels of the query/key/value embeddings")


@mechanism(
    "non_local", family="visual", params=NonLocalParams, modalities=SPATIAL, kind="spatial", recurrent=False,
    paper="Wang et al. 2018, Non-local Neural Networks",
)
class NonLocal(Core):
    """Non-local block: softmax(theta(x)^T phi(x) / sqrt(inner)) g(x) over all HW positions, zero-initialised residual.

    W_z starts at zero so the block is the identity at init (as in the paper,
    where the final BN's scale starts at zero).  SDPA unless recording.
    """

    def __init__(self, params: NonLocalParams):
        super().__init__(params)
        d, c = params.d_model, params.inner
        self.qkv = nn.Conv2d(d, 3 * c, 1)
        self.out = nn.Conv2d(c, d, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        B, _, H, W = x.shape
        q, k, v = self.qkv(x).flatten(2).transpose(1, 2).chunk(3, -1)  # (B, HW, c) each
        if self.record:
            weights = (q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])).float().softmax(-1)
            self._keep(attention=weights)
            y = weights.to(v.dtype) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(y.transpose(1, 2).reshape(B, -1, H, W))


class TemporalAttentionParams(Params):
    d_model: int = knob(64, 8, 2048, log=True, search=False, doc="frame embedding width")
    kernel: int = knob(3, 1, 9, search=False, doc="temporal kernel of the local importance branch")


@mechanism(
    "temporal_attention", family="visual", params=TemporalAttentionParams, recurrent=False,
    modalities=("bits", "tokens", "real", "video"),
    paper="Liu et al. 2021, TAM: Temporal Adaptive Module for Video Recognition",
)
class TemporalAttention(Core):
    """Adaptive temporal weighting of frames, causal: a local importance gate and a context-driven attention over frames.

    TAM's two branches, made causal: the local branch is a temporal conv over
    the frames so far whose sigmoid gives each frame (and channel) an
    importance; the global branch weights the frames 0..t with
    softmax((W_q m_t) . (W_k x_s) / sqrt(d)), where m_t is the running mean of
    the clip so far (TAM's global descriptor, restricted to the past), and
    aggregates the gated frames.  y_t = x_t + W_o sum_s a_ts (g_s * W_v x_s).
    Stateless (no carried state), like the transformer.
    """

    def __init__(self, params: TemporalAttentionParams):
        super().__init__(params)
        d, k = params.d_model, params.kernel
        self.norm = nn.LayerNorm(d)
        self.local = nn.Sequential(nn.Conv1d(d, d, k), nn.ReLU(), nn.Conv1d(d, d, 1))
        self.q, self.kv, self.out = nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)

    def forward(self, x, state=None):
        B, T, d = x.shape
        h = self.norm(x)
        gate = self.local(F.pad(h.transpose(1, 2), (self.params.kernel - 1, 0))).transpose(1, 2).sigmoid()
        context = h.float().cumsum(1) / torch.arange(1, T + 1, device=x.device)[:, None]  # running mean, in fp32
        q = self.q(context.to(h.dtype))
        k, v = self.kv(h).chunk(2, -1)
        v = gate * v
        if self.record:
            scores = (q @ k.transpose(1, 2)).float() / math.sqrt(d)
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            weights = scores.masked_fill(~causal, float("-inf")).softmax(-1)
            self._keep(temporal_attention=weights, frame_importance=gate.mean(-1))
            y = weights.to(v.dtype) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return x + self.out(y), None
