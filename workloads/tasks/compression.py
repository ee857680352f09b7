"""Compression (MAD: Poli et al. 2024): squeeze a random sequence into its final token, then reconstruct it."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import model_validator

from amlab.workloads.registry import Params, knob, task
from amlab.workloads.tasks._partition import check_space, draw_in_split
from amlab.workloads.tasks.base import Batch, Task
from amlab.workloads.tasks.noisy_recall import MAD

COMPRESS = 0


class CompressionParams(Params):
    vocab_size: int = knob(16, 2, 4096, search=False, doc="content tokens (MAD: 16-128)")
    seq_len: int = knob(32, 2, 4096, search=False, doc="tokens to compress including the final compression token (MAD: 32-256)")
    frac_noise: float = knob(0.0, 0.0, 0.9, search=False, doc="chance that a position holds noise, which is not reconstructed")
    noise_vocab: int = knob(0, 0, 4096, search=False, doc="distinct noise tokens (needed when frac_noise > 0)")
    decode_order: Literal["shuffled", "sequential"] = knob(
        "shuffled", choices=("shuffled", "sequential"), search=False,
        doc="order in which positions are asked for (shuffled: random access, like MAD's per-position decoder)")

    @model_validator(mode="after")
    def _fits(self):
        if self.frac_noise > 0 and not self.noise_vocab:
            raise ValueError("frac_noise > 0 needs noise_vocab >= 1")
        check_space(self.vocab_size ** (self.seq_len - 1), f"{self.seq_len - 1} tokens over {self.vocab_size}")
        return self


@task(
    "compression", params=CompressionParams, modality="tokens", loss="ce", metric="accuracy", higher_is_better=True,
    metrics=("accuracy", "seq_accuracy"), paper=MAD,
)
class Compression(Task):
    """`seq_len - 1` random tokens and a compression token, then one step per position: reconstruct that token.

    MAD encodes the sequence, keeps only the compression token's output and
    decodes every position from it with an MLP plus a position embedding.
    The platform builds encoder -> core -> one per-step head, which cannot
    express that decoder, so the decoding is written into the sequence:
    after the compression token come `seq_len - 1` position cues (token
    "position i", in random order unless `decode_order` is sequential), and
    the target at the cue for i is the i-th token.  For mechanisms with a
    fixed-size state this is MAD's bottleneck (everything must pass through
    the state at the compression token); a core that can attend back to its
    inputs may look the token up instead, so read attention's score here as
    an upper reference, not a compression result.  Selective variant: with
    `frac_noise`, noise positions are shown but never asked for.

    Tokens: 0 compression, [1, 1+noise) noise, then content, then the
    position cues.  Train, val and test compress disjoint parts of the space
    of sequences (`_partition`).
    """

    def __init__(self, params: CompressionParams):
        super().__init__(params)
        self.first_content = 1 + params.noise_vocab
        self.first_cue = self.first_content + params.vocab_size
        self.input_size = self.output_size = self.first_cue + params.seq_len - 1
        self.chance = 1 / params.vocab_size  # a uniform guess among the content tokens

    def sample(self, gen, batch_size, split):
        p, B, n = self.params, batch_size, self.params.seq_len - 1

        def draw(m):  # identities: the sequence to compress, noise included
            region = torch.randint(self.first_content, self.first_cue, (m, n), generator=gen)
            if p.frac_noise:
                noise = torch.rand(m, n, generator=gen) < p.frac_noise
                noise[torch.arange(m), torch.randint(0, n, (m,), generator=gen)] = False  # one token to reconstruct
                region = torch.where(noise, torch.randint(1, self.first_content, (m, n), generator=gen), region)
            return region

        region = draw_in_split(draw, B, split)
        order = torch.rand(B, n, generator=gen).argsort(1) if p.decode_order == "shuffled" else torch.arange(n).expand(B, n)
        asked = region.gather(1, order)
        scored = asked >= self.first_content
        inputs = torch.cat([region, torch.full((B, 1), COMPRESS), order + self.first_cue], 1)
        targets = torch.cat([torch.zeros(B, n + 1, dtype=torch.long), asked * scored], 1)
        mask = torch.cat([torch.zeros(B, n + 1, dtype=torch.bool), scored], 1)
        return Batch(inputs, targets, mask, {"order": order})

    def score(self, logits, batch):
        right = (logits.argmax(-1) == batch.targets) & batch.mask
        per_example = right.sum(1) / batch.mask.sum(1)
        return {"accuracy": per_example.mean().item(), "seq_accuracy": (per_example == 1).float().mean().item()}
