"""Mechanism cores and the model that wraps them for a task.

The model is always: task-modality encoder -> mechanism core -> task head,
so a mechanism written once runs on every task of a modality it accepts.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from amlab.workloads.registry import MECHANISMS, TASKS, MechanismEntry, Params
from amlab.workloads.tasks.base import Batch, Task


class Core(nn.Module):
    """Base class of mechanism cores.

    Sequence cores: `forward(x, state=None) -> (y, state)` with x, y of shape
    (B, T, d_model), causal; `state` is whatever the core carries between
    chunks (None for stateless cores) so that running a sequence in two
    chunks with the carried state equals running it whole.

    Introspection: while `self.record` is True a core stores what it
    attended to / read / wrote in `self.trace` (tensors with a leading batch
    dimension; attention rows sum to 1); `introspect()` returns it.  Cores may
    take a slower explicit path while recording (e.g. attention without SDPA).
    """

    d_model: int

    def __init__(self, params: Params):
        super().__init__()
        self.params = params
        self.d_model = int(getattr(params, "d_model", 0))
        self.record = False
        self.trace: dict[str, torch.Tensor] = {}

    def introspect(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().float().cpu() for k, v in self.trace.items()}

    def state_size(self) -> int:
        """Floats carried per sequence between time steps (hidden state, memory, fast weights)."""
        return 0

    def auxiliary_loss(self, per_example_loss: torch.Tensor) -> torch.Tensor | None:
        """Extra loss for non-differentiable choices (REINFORCE): given the detached task loss per example."""
        return None

    def _keep(self, **tensors: torch.Tensor) -> None:
        if self.record:
            self.trace.update({k: v.detach() for k, v in tensors.items()})


class SequenceModel(nn.Module):
    """Embedding (tokens) or linear (bits/real) encoder -> sequence core -> linear head."""

    def __init__(self, task: Task, modality: str, core: Core):
        super().__init__()
        d = core.d_model
        # a task's padding token embeds to zero and learns nothing (MemN2N's null symbol): padded slots add nothing
        self.encoder = (nn.Embedding(task.input_size, d, padding_idx=getattr(task, "pad_token", None))
                        if modality == "tokens" else nn.Linear(task.input_size, d))
        self.core = core
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, task.output_size)

    def forward(self, inputs: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        y, state = self.core(self.encoder(inputs), state)
        return self.head(self.norm(y)), state


class FrameEncoder(nn.Module):
    """Conv stem -> optional spatial core -> conv -> global max pool: one image to a d-vector.

    The stem halves the resolution until the feature map is at most 16 on a side
    (so a non-local block's HW x HW attention stays small); the conv after the
    spatial core lets what the core selected or re-weighted be recognised
    before pooling throws the layout away.  Max, not mean, pooling: the object
    is small on a cluttered canvas and a mean dilutes its evidence by the
    canvas area (on cluttered_digits a mean-pooled encoder stayed at chance
    for 200 steps where the max-pooled one reached ~48% train accuracy).
    """

    def __init__(self, channels: int, image_size: tuple[int, int], d: int, spatial: Core | None = None):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, d, 3, padding=1), nn.ReLU()]
        side = min(image_size)
        while side > 16:
            layers += [nn.Conv2d(d, d, 3, stride=2, padding=1), nn.ReLU()]
            side = (side + 1) // 2
        self.stem = nn.Sequential(*layers)
        self.spatial = spatial
        self.post = nn.Sequential(nn.Conv2d(d, d, 3, padding=1), nn.ReLU())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        f = self.stem(images)
        if self.spatial is not None:
            f = self.spatial(f)
        return self.post(f).amax((-2, -1))


class ImageModel(nn.Module):
    """Image classification: frame encoder with the spatial core -> head; logits (B, 1, classes)."""

    def __init__(self, task: Task, core: Core):
        super().__init__()
        self.encoder = FrameEncoder(task.input_size, tuple(task.image_size), core.d_model, core)
        self.norm = nn.LayerNorm(core.d_model)
        self.head = nn.Linear(core.d_model, task.output_size)

    @property
    def core(self) -> Core:
        return self.encoder.spatial

    def forward(self, inputs: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        return self.head(self.norm(self.encoder(inputs)))[:, None], None


class VideoModel(nn.Module):
    """Clip classification: per-frame encoder -> sequence over frames -> last step -> head; logits (B, 1, classes).

    With a sequence mechanism the core runs over the frame embeddings (the
    encoder is a plain conv stem).  With a spatial mechanism the core sits
    inside the frame encoder and a fixed one-layer GRU reads the frames, so
    every spatial mechanism meets the same temporal reader.
    """

    def __init__(self, task: Task, core: Core, kind: str):
        super().__init__()
        d = core.d_model
        spatial = kind == "spatial"
        self.encoder = FrameEncoder(task.input_size, tuple(task.image_size), d, core if spatial else None)
        self.temporal = nn.GRU(d, d, batch_first=True) if spatial else core
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, task.output_size)

    @property
    def core(self) -> Core:
        return self.encoder.spatial if self.encoder.spatial is not None else self.temporal

    def forward(self, inputs: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        B, F_ = inputs.shape[:2]
        frames = self.encoder(inputs.flatten(0, 1)).view(B, F_, -1)
        y, state = self.temporal(frames, state)
        return self.head(self.norm(y[:, -1:])), state


class GlimpseModel(nn.Module):
    """A glimpse core (RAM) reads the image itself and returns its final state -> head; logits (B, 1, classes)."""

    def __init__(self, task: Task, core: Core):
        super().__init__()
        core.bind(task.input_size)
        self.core = core
        self.norm = nn.LayerNorm(core.d_model)
        self.head = nn.Linear(core.d_model, task.output_size)

    def forward(self, inputs: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        return self.head(self.norm(self.core(inputs)))[:, None], None


class IncompatibleCell(ValueError):
    """A mechanism asked for on a task whose modality it cannot serve."""


def check_compatible(mechanism: str, task: str) -> None:
    m, t = MECHANISMS.get(mechanism), TASKS.get(task)
    if t.modality not in m.modalities:
        raise IncompatibleCell(
            f"mechanism {mechanism!r} cannot serve task {task!r}: the task's modality is "
            f"{t.modality!r}, {mechanism} accepts {', '.join(m.modalities)}"
        )


def build_model(mechanism: str, mech_params: Params, task_obj: Task, task: str) -> nn.Module:
    """The full model for one cell; `model.core` is the mechanism.

    sequence core on bits/tokens/real -> SequenceModel; spatial core on image
    -> ImageModel; sequence or spatial core on video -> VideoModel; glimpse
    core on image -> GlimpseModel.
    """
    check_compatible(mechanism, task)
    entry: MechanismEntry = MECHANISMS.get(mechanism)
    modality = TASKS.get(task).modality
    core = entry.build(mech_params)
    if entry.kind == "sequence" and modality in ("bits", "tokens", "real"):
        return SequenceModel(task_obj, modality, core)
    if entry.kind == "spatial" and modality == "image":
        return ImageModel(task_obj, core)
    if entry.kind in ("sequence", "spatial") and modality == "video":
        return VideoModel(task_obj, core, entry.kind)
    if entry.kind == "glimpse" and modality == "image":
        return GlimpseModel(task_obj, core)
    raise IncompatibleCell(
        f"mechanism {mechanism!r} cannot serve task {task!r}: no model for a {entry.kind} mechanism on {modality} inputs"
    )


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def compute_loss(kind: str, logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss over scored positions, per-example loss (B,)) for bce, ce or mse."""
    mask = batch.mask.to(logits.dtype)
    if kind == "ce":
        per_pos = F.cross_entropy(logits.float().transpose(1, 2), batch.targets, reduction="none")
    elif kind == "bce":
        per_pos = F.binary_cross_entropy_with_logits(logits.float(), batch.targets.float(), reduction="none").mean(-1)
    elif kind == "mse":
        per_pos = F.mse_loss(logits.float(), batch.targets.float(), reduction="none").mean(-1)
    else:
        raise ValueError(f"unknown loss {kind!r}; valid: bce, ce, mse")
    per_pos = per_pos * mask
    per_example = per_pos.sum(1) / mask.sum(1).clamp_min(1)
    return per_pos.sum() / mask.sum().clamp_min(1), per_example
