"""Stochastic hard attention (Xu et al. 2015): attend to one sampled position, trained with REINFORCE."""

from __future__ import annotations

import math

import torch
from torch import nn

from amlab.workloads.model import Core
from amlab.workloads.registry import Params, knob, mechanism

MASKED = -1e9  # finite, so masked positions get probability exactly 0 and 0 * log p stays 0


class HardAttentionParams(Params):
    d_model: int = knob(64, 8, 1024, log=True, search=False, doc="LSTM state size")
    baseline_decay: float = knob(0.9, 0.0, 0.999, doc="moving-average baseline b <- decay b + (1 - decay) loss")
    entropy_weight: float = knob(0.01, 0.0, 1.0, doc="weight of the entropy bonus on the attention distribution")
    soft_prob: float = knob(0.5, 0.0, 1.0, space=(0.0, 0.5),
                            doc="probability that a training step uses the expected context instead; searched only "
                                "up to 0.5 so that sampling (what makes it hard attention) stays the rule")


@mechanism(
    "hard_attention", family="attention", params=HardAttentionParams, modalities=("bits", "tokens", "real", "video"),
    paper="Xu et al. 2015, Show, Attend and Tell: Neural Image Caption Generation with Visual Attention",
)
class HardAttention(Core):
    """An LSTM; step t scores its states 0..t with alpha = softmax(q_t . k_s / sqrt(d)) and reads ONE of them.

    Training samples s ~ alpha (with probability `soft_prob` per step the
    expected context sum_s alpha_s v_s is used instead, the paper's variance
    reduction, which also gives the scorer a pathwise gradient); evaluation
    reads the argmax (deterministic).  `auxiliary_loss` adds
    (L - b) sum_t log alpha(s_t) - entropy_weight * H(alpha): REINFORCE with
    the moving-average baseline b of the task loss L (the paper's
    log-likelihood reward is -L) and the entropy bonus.  y_t = W_o [h_t; c_t].

    State: (LSTM state, all states so far (B, M, d)).
    """

    def __init__(self, params: HardAttentionParams):
        super().__init__(params)
        d = params.d_model
        self.rnn = nn.LSTM(d, d, batch_first=True)
        self.q, self.kv = nn.Linear(d, d), nn.Linear(d, 2 * d)
        self.out = nn.Linear(2 * d, d)
        self.register_buffer("baseline", torch.zeros(()))
        self.register_buffer("baseline_set", torch.zeros((), dtype=torch.bool))
        self._log_prob: torch.Tensor | None = None
        self._entropy: torch.Tensor | None = None

    def state_size(self) -> int:
        return 2 * self.d_model  # plus d_model per earlier step: the attended memory grows with T

    def forward(self, x, state=None):
        B, T, d = x.shape
        rnn_state, mem = state if state is not None else (None, x.new_zeros(B, 0, d))
        h, rnn_state = self.rnn(x, rnn_state)
        allh = torch.cat([mem, h.to(mem.dtype)], 1)
        M = mem.shape[1]
        k, v = self.kv(allh).chunk(2, -1)
        scores = (self.q(h) @ k.transpose(1, 2)).float() / math.sqrt(d)
        allowed = torch.ones(T, M + T, dtype=torch.bool, device=x.device).tril(M)
        logp = scores.masked_fill(~allowed, MASKED).log_softmax(-1)
        alpha = logp.exp()
        if self.training:
            pos = torch.multinomial(alpha.view(B * T, -1), 1).view(B, T)
            soft = torch.rand(B, T, device=x.device) < self.params.soft_prob
        else:
            pos = alpha.argmax(-1)
            soft = torch.zeros(B, T, dtype=torch.bool, device=x.device)
        hard_ctx = v.gather(1, pos[..., None].expand(B, T, d))
        soft_ctx = alpha.to(v.dtype) @ v
        c = torch.where(soft[..., None], soft_ctx, hard_ctx)
        if self.training and torch.is_grad_enabled():
            self._log_prob = (logp.gather(-1, pos[..., None]).squeeze(-1) * ~soft).sum(1)
            self._entropy = -(alpha * logp).sum((1, 2))
        self._keep(attention=alpha, sampled_positions=pos)
        return self.out(torch.cat([h, c.to(h.dtype)], -1)), (rnn_state, allh)

    def auxiliary_loss(self, per_example_loss):
        """REINFORCE term for the last training forward; updates the moving-average baseline."""
        if self._log_prob is None:
            return None
        loss = per_example_loss.detach().float()
        p = self.params
        with torch.no_grad():
            if not self.baseline_set:
                self.baseline.copy_(loss.mean())
                self.baseline_set.fill_(True)
            advantage = loss - self.baseline
            self.baseline.mul_(p.baseline_decay).add_((1 - p.baseline_decay) * loss.mean())
        aux = (advantage * self._log_prob).mean() - p.entropy_weight * self._entropy.mean()
        self._log_prob = self._entropy = None
        return aux
