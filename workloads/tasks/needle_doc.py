"""Needle documents: many sentences, one key sentence (marked) decides the label (document classification)."""

from __future__ import annotations

import torch
from pydantic import model_validator

from amlab.workloads.registry import Params, knob, task
from amlab.workloads.tasks._classify import last_position_accuracy, last_position_batch
from amlab.workloads.tasks.base import Batch, Task

MARKER = 1  # token 0 is unused padding; 1 marks the key sentence; then the class words; then fillers


class NeedleDocParams(Params):
    sentences: int = knob(16, 2, 512, search=False, doc="sentences per document")
    words: int = knob(8, 3, 64, search=False, doc="tokens per sentence (a hierarchical model's sentence_len)")
    classes: int = knob(4, 2, 32, search=False, doc="labels; each is one class word")
    vocab_size: int = knob(64, 8, 4096, search=False, doc="tokens: padding, marker, class words, fillers")
    test_sentences: tuple[int, ...] = knob((16, 64), search=False, doc="document lengths of the test split's groups")

    @model_validator(mode="after")
    def _fits(self):
        if self.vocab_size < self.classes + 4:
            raise ValueError(f"vocab_size ({self.vocab_size}) must be >= classes + 4 ({self.classes + 4})")
        if not self.test_sentences or min(self.test_sentences) < 2:
            raise ValueError("test_sentences must be a non-empty list of sentence counts >= 2")
        return self


@task(
    "needle_doc", params=NeedleDocParams, modality="tokens", loss="ce", metric="accuracy", higher_is_better=True,
    metrics=("accuracy",), paper="Yang et al. 2016, Hierarchical Attention Networks for Document Classification",
)
class NeedleDoc(Task):
    """`sentences` sentences of `words` tokens, laid out consecutively; the label is scored at the last token.

    Every sentence holds filler words and exactly one class word (a random
    class), so class words are everywhere; only the key sentence also holds
    the marker, and its class word is the label.  Solving it takes both
    levels of a hierarchical model: find the marked sentence, then read the
    class word inside it.  `meta["key_sentence"]` is the key sentence's
    index, for checks of attention mass.
    """

    def __init__(self, params: NeedleDocParams):
        super().__init__(params)
        self.input_size, self.output_size = params.vocab_size, params.classes
        self.chance = 1.0 / params.classes  # class words are uniform
        self.sentence_len = params.words

    def eval_groups(self, split):
        if split == "test":
            return {f"sentences_{n}": {"sentences": n} for n in self.params.test_sentences}
        return {"all": {}}

    def sample(self, gen, batch_size, split, sentences: int | None = None):
        p = self.params
        B, S, W = batch_size, sentences or p.sentences, p.words
        first_filler = 2 + p.classes
        doc = torch.randint(first_filler, p.vocab_size, (B, S, W), generator=gen)
        # two distinct slots per sentence: slot 0 takes the class word, slot 1 the marker (key sentence only)
        slots = torch.rand(B, S, W, generator=gen).argsort(-1)[..., :2]
        classes = torch.randint(0, p.classes, (B, S), generator=gen)
        doc.scatter_(2, slots[..., :1], (2 + classes)[..., None])
        key = torch.randint(0, S, (B,), generator=gen)
        rows = torch.arange(B)
        doc[rows, key, slots[rows, key, 1]] = MARKER
        labels = classes[rows, key]
        targets, mask = last_position_batch(labels, S * W)
        return Batch(doc.view(B, S * W), targets, mask, {"key_sentence": key, "label": labels})

    def score(self, logits, batch):
        return {"accuracy": last_position_accuracy(logits, batch)}
