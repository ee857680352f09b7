"""The real bAbI files (Weston et al. 2015), read from a local folder: parsed, split and encoded as the generated
task encodes its stories (nothing is downloaded)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import torch


def _words(text: str) -> list[str]:
    return re.sub(r"([.?,])", r" \1 ", text.lower()).split()


def parse(path: Path) -> list[tuple[list[list[str]], list[str], str, list[int]]]:
    """The examples of a bAbI file: (story sentences so far, question, answer, supporting sentence indices)."""
    examples, story, line_to_sentence = [], [], {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        num, _, text = line.strip().partition(" ")
        if int(num) == 1:
            story, line_to_sentence = [], {}
        if "\t" in text:
            question, answer, supports = (text.split("\t") + [""])[:3]
            examples.append(([*story], _words(question), answer.strip().lower(),
                             [line_to_sentence[int(s)] for s in supports.split()]))
        else:
            line_to_sentence[int(num)] = len(story)
            story.append(_words(text))
    return examples


def babi_files(data_dir: str, family: int) -> dict[str, Path] | str:
    """bAbI task `family`'s train and test files in `data_dir`, or what is missing."""
    folder = Path(data_dir).expanduser()
    found = {p: sorted(folder.glob(f"qa{family}_*_{p}.txt"))[:1] if folder.is_dir() else [] for p in ("train", "test")}
    gone = [folder / f"qa{family}_*_{p}.txt" for p, f in found.items() if not f]
    return (f"no bAbI file {gone[0]} (data_dir should be e.g. tasks_1-20_v1-2/en-10k; nothing is downloaded)" if gone
            else {p: f[0] for p, f in found.items()})


@cache
def load_files(data_dir: str, family: int, facts: int, base_vocab: tuple[str, ...],
               sentence_len: int) -> tuple[tuple[str, ...], dict[str, dict[str, torch.Tensor]]]:
    """Vocabulary (`base_vocab` first, then the files' other words) and encoded splits of the bAbI task `family`:
    train (90% of the train file), val (10%), test."""
    if isinstance(paths := babi_files(data_dir, family), str):
        raise FileNotFoundError(f"babi: {paths}")
    files = {part: parse(file) for part, file in paths.items()}
    seen = {w for ex in files["train"] + files["test"] for w in [*(w for s in ex[0] for w in s), *ex[1], ex[2]]}
    vocab = base_vocab + tuple(sorted(seen - set(base_vocab)))
    cut = len(files["train"]) * 9 // 10
    parts = {"train": files["train"][:cut], "val": files["train"][cut:], "test": files["test"]}
    ids = {w: i for i, w in enumerate(vocab)}
    return vocab, {k: encode(v, ids, facts, sentence_len) for k, v in parts.items()}


def encode(examples, ids: dict[str, int], facts: int, sentence_len: int) -> dict[str, torch.Tensor]:
    """Pad each story to `facts` sentences (empty ones first, most recent kept) and right-align the question."""
    tokens = torch.zeros(len(examples), (facts + 1) * sentence_len, dtype=torch.long)
    support = torch.full((len(examples), 3), -1)
    for i, (story, question, _, sup) in enumerate(examples):
        kept = story[-facts:]
        offset = facts - len(kept)
        for j, sentence in enumerate([*kept, question]):
            if len(sentence) > sentence_len:
                raise ValueError(f"babi: sentence {' '.join(sentence)!r} is longer than {sentence_len} tokens")
            start = (offset + j) * sentence_len + (sentence_len - len(sentence) if j == len(kept) else 0)
            tokens[i, start : start + len(sentence)] = torch.tensor([ids[w] for w in sentence])
        moved = [s - (len(story) - len(kept)) + offset for s in sup][:3]
        support[i, : len(moved)] = torch.tensor([s if s >= offset else -1 for s in moved])
    answers = torch.tensor([ids[ex[2]] for ex in examples])
    return {"tokens": tokens, "answer": answers, "support": support}
