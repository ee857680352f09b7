"""Character (byte) language modelling on text that ships with Python, or on a local file the user names."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import field_validator, model_validator

from amlab.workloads.registry import Params, knob, task
from amlab.workloads.tasks.base import Batch, Task

REGIONS = {"train": (0.0, 0.9), "val": (0.9, 0.95), "test": (0.95, 1.0)}  # fractions of the text


class CharLMParams(Params):
    context: int = knob(128, 8, 8192, search=False, doc="bytes per training window")
    test_contexts: tuple[int, ...] = knob((128, 512), search=False, doc="window lengths of the test split's groups")
    path: str | None = knob(None, search=False, doc="a local text file (e.g. enwik8); default: Python's pydoc_data.topics")

    @field_validator("path")
    @classmethod
    def _path_exists(cls, path: str | None) -> str | None:
        """Checked when the spec is validated, before Ray starts (and again where the text is read)."""
        if path is not None and not Path(path).expanduser().is_file():
            what = "a folder, not a text file" if Path(path).expanduser().is_dir() else "no such text file"
            raise ValueError(f"{what}; set path to an existing local file, or leave it out for the bundled text")
        return path

    @model_validator(mode="after")
    def _contexts(self):
        if not self.test_contexts or min(self.test_contexts) < 8:
            raise ValueError("test_contexts must be a non-empty list of lengths >= 8")
        return self


@lru_cache(maxsize=4)
def load_text(path: str | None) -> torch.Tensor:
    """The corpus as a (N,) uint8 tensor, read once per process; nothing is downloaded."""
    if path is None:
        from pydoc_data.topics import topics

        data = "\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8")
    else:
        file = Path(path).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"char_lm: text file not found: {file} (set `path` to an existing local file)")
        data = file.read_bytes()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def region(text: torch.Tensor, split: str) -> tuple[int, int]:
    """[start, end) byte offsets of a split: contiguous, disjoint, in the order train | val | test."""
    if split not in REGIONS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(REGIONS)}")
    lo, hi = REGIONS[split]
    return int(lo * len(text)), int(hi * len(text))


def unigram_bits(text: torch.Tensor) -> float:
    """Bits per byte of the test region under the add-one-smoothed byte frequencies of the train region."""
    counts = torch.bincount(text[slice(*region(text, "train"))].long(), minlength=256).double() + 1
    test = text[slice(*region(text, "test"))].long()
    return -(counts / counts.sum()).log2()[test].mean().item()


@task(
    "char_lm", params=CharLMParams, modality="tokens", loss="ce", metric="bpc", higher_is_better=False,
    metrics=("bpc", "accuracy"), paper="Merity 2019, Single Headed Attention RNN: Stop Thinking With Your Head",
)
class CharLM(Task):
    """Next-byte prediction over windows of `context` bytes, scored in bits per character at every position.

    The text is split into contiguous regions (90% train, 5% val, 5% test) and
    a window, with the byte that follows it, lies wholly inside one region.
    `chance` is the unigram baseline (a model that only learned byte
    frequencies on train, scored on test), not the 8 bits of uniform bytes.
    """

    def __init__(self, params: CharLMParams):
        super().__init__(params)
        self.input_size = self.output_size = 256
        text = load_text(params.path)
        for split in REGIONS:
            lo, hi = region(text, split)
            longest = max(params.context, *params.test_contexts)
            if hi - lo <= longest:
                raise ValueError(f"char_lm: the {split} region ({hi - lo} bytes) is shorter than a window of {longest + 1}")
        self.chance = unigram_bits(text)

    def eval_groups(self, split):
        if split == "test":
            return {f"ctx_{c}": {"context": c} for c in self.params.test_contexts}
        return {"all": {}}

    def sample(self, gen, batch_size, split, context: int | None = None):
        n = context or self.params.context
        text = load_text(self.params.path)
        lo, hi = region(text, split)
        starts = torch.randint(lo, hi - n, (batch_size,), generator=gen)
        windows = text[starts[:, None] + torch.arange(n + 1)].long()
        mask = torch.ones(batch_size, n, dtype=torch.bool)
        return Batch(windows[:, :-1], windows[:, 1:], mask, {"start": starts})

    def score(self, logits, batch):
        nats = F.cross_entropy(logits.float().transpose(1, 2), batch.targets, reduction="none")
        m = batch.mask.float()
        per_example = (nats * m).sum(1) / m.sum(1)
        right = ((logits.argmax(-1) == batch.targets).float() * m).sum(1) / m.sum(1)
        return {"bpc": per_example.mean().item() / math.log(2), "accuracy": right.mean().item()}
