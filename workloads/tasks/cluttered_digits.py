"""Cluttered digits: one digit at a random place on a larger canvas strewn with digit fragments (cluttered MNIST, in small)."""

from __future__ import annotations

import torch
from pydantic import model_validator

from amlab.workloads.registry import Params, knob, task
from amlab.workloads.tasks import _digits
from amlab.workloads.tasks._classify import last_position_accuracy
from amlab.workloads.tasks.base import Batch, Task


class ClutteredDigitsParams(Params):
    canvas: int = knob(40, 8, 256, search=False, doc="canvas side in pixels")
    scale: int = knob(2, 1, 8, search=False, doc="upscaling of the 8x8 digits (2: 16x16 on the canvas)")
    clutter: int = knob(6, 0, 64, search=False, doc="digit fragments strewn over the canvas")
    fragment: int = knob(4, 1, 8, search=False, doc="side of a fragment, in digit pixels before scaling")
    test_canvas: int = knob(56, 8, 256, search=False, doc="canvas side of the test split's larger-canvas group")
    test_clutter: int = knob(12, 0, 256, search=False, doc="fragments in the test split's more-clutter group")

    @model_validator(mode="after")
    def _fits(self):
        side = min(self.canvas, self.test_canvas)
        if 8 * self.scale > side:
            raise ValueError(f"a {8 * self.scale}-pixel digit does not fit on a {side}-pixel canvas")
        return self


@task(
    "cluttered_digits", params=ClutteredDigitsParams, modality="image", loss="ce", metric="accuracy", higher_is_better=True,
    metrics=("accuracy",), paper="Mnih et al. 2014, Recurrent Models of Visual Attention",
)
class ClutteredDigits(Task):
    """Classify the one whole digit on a canvas; fragments of other digits are clutter.

    Fragments are crops of other images from the same split's partition, so
    test digits and test clutter are never seen in training.  Pixels are
    composited with max, so the digit's patch is at least the digit itself;
    `meta["position"]` holds its top-left (y, x).
    """

    def __init__(self, params: ClutteredDigitsParams):
        super().__init__(params)
        self.input_size, self.output_size = 1, 10
        self.image_size = (params.canvas, params.canvas)
        self.chance = 0.1  # ten nearly balanced classes

    def eval_groups(self, split):
        p = self.params
        if split == "test":
            return {
                "base": {},
                f"clutter_{p.test_clutter}": {"clutter": p.test_clutter},
                f"canvas_{p.test_canvas}": {"canvas": p.test_canvas},
            }
        return {"all": {}}

    def sample(self, gen, batch_size, split, canvas: int | None = None, clutter: int | None = None):
        p = self.params
        B, H = batch_size, canvas or p.canvas
        K = p.clutter if clutter is None else clutter
        images, labels = _digits.digits()
        idx = _digits.draw(gen, split, B)
        digit = _digits.upscale(images[idx], p.scale)  # (B, s, s)
        s, f = digit.shape[-1], p.fragment * p.scale
        pos = torch.randint(0, H - s + 1, (B, 2), generator=gen)
        img = torch.zeros(B, H, H)
        if K:
            frags = _digits.upscale(_digits.fragments(gen, split, (B, K), p.fragment), p.scale)
            fy, fx = torch.randint(0, H - f + 1, (2, B, K), generator=gen)
            img = _digits.paste_max(img, frags, fy, fx)
        img = _digits.paste_max(img, digit[:, None], pos[:, :1], pos[:, 1:])
        meta = {"position": pos, "index": idx, "label": labels[idx]}
        return Batch(img[:, None], labels[idx][:, None], torch.ones(B, 1, dtype=torch.bool), meta)

    def score(self, logits, batch):
        return {"accuracy": last_position_accuracy(logits, batch)}
