"""Moving digits: short clips in which only one or two frames show the digit that decides the label."""

from __future__ import annotations

import torch
from pydantic import model_validator

from amlab.workloads.registry import Params, knob, task
from amlab.workloads.tasks import _digits
from amlab.workloads.tasks._classify import last_position_accuracy
from amlab.workloads.tasks.base import Batch, Task


class MovingDigitsParams(Params):
    frames: int = knob(8, 2, 128, search=False, doc="frames per clip")
    key_frames: int = knob(2, 1, 8, search=False, doc="frames that show the digit (at a new place in each)")
    size: int = knob(16, 8, 128, search=False, doc="frame side in pixels (digits are 8x8)")
    clutter: int = knob(3, 0, 32, search=False, doc="digit fragments (4x4) in every other frame")
    noise: float = knob(0.2, 0.0, 1.0, search=False, doc="peak of the uniform pixel noise in every frame")
    test_frames: int = knob(16, 2, 512, search=False, doc="clip length of the test split's longer-clip group")

    @model_validator(mode="after")
    def _fits(self):
        if self.key_frames > min(self.frames, self.test_frames):
            raise ValueError(f"key_frames ({self.key_frames}) must be <= frames and test_frames")
        return self


@task(
    "moving_digits", params=MovingDigitsParams, modality="video", loss="ce", metric="accuracy", higher_is_better=True,
    metrics=("accuracy",), paper="Liu et al. 2021, TAM: Temporal Adaptive Module for Video Recognition",
)
class MovingDigits(Task):
    """Clips (B, F, 1, H, W): `key_frames` frames show one digit, moving between them; the rest hold clutter.

    Clutter frames hold fragments of other digits (of the same split's
    partition); every frame gets uniform noise, composited with max, so a
    deciding frame's patch is at least the digit.  `meta["key_frames"]`
    holds the deciding frame indices (sorted) and `meta["position"]` the
    digit's top-left (y, x) in each of them.
    """

    def __init__(self, params: MovingDigitsParams):
        super().__init__(params)
        self.input_size, self.output_size = 1, 10
        self.frames = params.frames
        self.image_size = (params.size, params.size)
        self.chance = 0.1  # ten nearly balanced classes

    def eval_groups(self, split):
        if split == "test":
            return {f"frames_{self.params.frames}": {}, f"frames_{self.params.test_frames}": {"frames": self.params.test_frames}}
        return {"all": {}}

    def sample(self, gen, batch_size, split, frames: int | None = None):
        p = self.params
        B, F, H, K = batch_size, frames or p.frames, p.size, p.key_frames
        images, labels = _digits.digits()
        idx = _digits.draw(gen, split, B)
        video = torch.zeros(B * F, H, H)
        if p.clutter:
            frags = _digits.fragments(gen, split, (B * F, p.clutter), 4)
            fy, fx = torch.randint(0, H - 3, (2, B * F, p.clutter), generator=gen)
            video = _digits.paste_max(video, frags, fy, fx)
        video = video.view(B, F, H, H)
        key = torch.rand(B, F, generator=gen).argsort(-1)[:, :K].sort(-1).values
        pos = torch.randint(0, H - 7, (B, K, 2), generator=gen)
        digit = images[idx][:, None].expand(B, K, 8, 8).reshape(B * K, 1, 8, 8)
        shown = _digits.paste_max(torch.zeros(B * K, H, H), digit, pos[..., 0].reshape(-1, 1), pos[..., 1].reshape(-1, 1))
        video[torch.arange(B)[:, None], key] = shown.view(B, K, H, H)
        video = torch.maximum(video, p.noise * torch.rand(B, F, H, H, generator=gen))
        meta = {"key_frames": key, "position": pos, "index": idx, "label": labels[idx]}
        return Batch(video[:, :, None], labels[idx][:, None], torch.ones(B, 1, dtype=torch.bool), meta)

    def score(self, logits, batch):
        return {"accuracy": last_position_accuracy(logits, batch)}
