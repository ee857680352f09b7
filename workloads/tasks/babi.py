"""bAbI-style question answering (Weston et al. 2015, tasks 1-3): generated stories, or the real bAbI 10k files.

Generated stories simulate a small world: people move between locations and
pick up / drop objects (an object moves with whoever holds it).  Family 1
asks "where is PERSON ?" (one supporting fact), family 2 "where is the
OBJECT ?" (two: who holds or dropped it, and where they were), family 3
"where was the OBJECT before the LOCATION ?" (three: where the carrier was,
that it carried the object, and its move to LOCATION), as in bAbI.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import torch
from pydantic import model_validator

from amlab.workloads.registry import Params, knob, task
from amlab.workloads.tasks._classify import last_position_accuracy, last_position_batch
from amlab.workloads.tasks.base import Batch, Task

PEOPLE = ("mary", "john", "sandra", "daniel", "fred", "bill", "julie", "jeff")
LOCATIONS = ("bathroom", "hallway", "kitchen", "office", "garden", "bedroom")
OBJECTS = ("football", "apple", "milk", "box", "book", "key", "pen", "cup")
WORDS = ("<pad>", ".", "?", "where", "is", "was", "before", "the", "to", "up", "down",
         "moved", "went", "journeyed", "travelled", "picked", "got", "grabbed", "took", "dropped", "discarded", "left", "put")
VOCAB = WORDS + PEOPLE + LOCATIONS + OBJECTS
ID = {w: i for i, w in enumerate(VOCAB)}
SENTENCE_LEN = 8  # the longest sentence is family 3's question, 8 tokens

# sentence templates by action (move, pick, drop), four phrasings each; -1/-2/-3 stand for person/location/object
_P, _L, _O = -1, -2, -3
_PHRASES = (
    [["moved", "to", "the"], ["went", "to", "the"], ["journeyed", "to", "the"], ["travelled", "to", "the"]],
    [["picked", "up", "the"], ["got", "the"], ["grabbed", "the"], ["took", "the"]],
    [["dropped", "the"], ["discarded", "the"], ["left", "the"], ["put", "down", "the"]],
)
MOVE, PICK, DROP = 0, 1, 2
UNSEEN, HELD = -2, -1  # object states besides lying at a location


def _row(codes: list) -> list[int]:
    ids = [c if isinstance(c, int) else ID[c] for c in codes]
    return ids + [0] * (SENTENCE_LEN - len(ids))


TEMPLATES = torch.tensor([_row([_P, *phrase, _L if action == MOVE else _O, "."])
                          for action, phrases in enumerate(_PHRASES) for phrase in phrases])
QUESTIONS = {  # right-aligned so that "?" is the last input token and the answer is predicted there
    1: torch.tensor(_row(["where", "is", _P, "?"])).roll(4),
    2: torch.tensor(_row(["where", "is", "the", _O, "?"])).roll(3),
    3: torch.tensor(_row(["where", "was", "the", _O, "before", "the", _L, "?"])),
}
SPLIT_BUCKETS = {"train": range(0, 8), "val": range(8, 9), "test": range(9, 10)}  # story hash mod 10
HASH_P, HASH_BASE = 2_147_483_647, 1_000_003


class BabiParams(Params):
    family: int = knob(1, 1, 3, choices=(1, 2, 3), search=False, doc="bAbI task: 1, 2 or 3 supporting facts")
    facts: int = knob(10, 2, 512, search=False, doc="story sentences (generated); memory size, most recent kept (files)")
    distractors: int = knob(3, 0, 7, search=False, doc="people (and objects) besides one: actors irrelevant to the question")
    test_facts: tuple[int, ...] = knob((10, 20, 40), search=False, doc="story lengths of the test split's groups")
    data_dir: str | None = knob(None, search=False, doc="folder with the real bAbI files qa{family}_*_{train,test}.txt")

    @model_validator(mode="after")
    def _lengths(self):
        if min(self.facts, *self.test_facts) < 2 * self.family:
            raise ValueError(f"family {self.family} needs stories of at least {2 * self.family} facts")
        return self


@task(
    "babi", params=BabiParams, modality="tokens", loss="ce", metric="error", higher_is_better=False,
    metrics=("error",), paper="Sukhbaatar et al. 2015, End-To-End Memory Networks (bAbI: Weston et al. 2015)",
)
class Babi(Task):
    """Story sentences (`SENTENCE_LEN` tokens each, padded) then the question; the answer word is scored last.

    Inputs are (B, (facts + 1) * 8) tokens; `meta["support"]` holds the
    supporting sentences' indices (-1 padded) and `meta["answer"]` the answer
    token.  Generated splits are disjoint by construction: a story belongs to
    train, val or test by a hash of its sentences, so no test story is ever
    trained on.  With `data_dir`, examples come from the bAbI 10k files
    (val: the last 10% of the train file) and the vocabulary grows by their
    words.
    """

    def __init__(self, params: BabiParams):
        super().__init__(params)
        self.sentence_len = SENTENCE_LEN
        if params.data_dir is None:
            self.vocab = VOCAB
            self.chance = 1 - 1 / len(LOCATIONS)  # answers are uniform over the locations
        else:
            self.vocab, self.data = load_files(params.data_dir, params.family, params.facts)
            answers = self.data["test"]["answer"]
            self.chance = 1 - torch.bincount(answers).max().item() / len(answers)  # always the most common answer
        self.input_size = self.output_size = len(self.vocab)

    def eval_groups(self, split):
        if split == "test" and self.params.data_dir is None:
            return {f"facts_{n}": {"facts": n} for n in self.params.test_facts}
        return {"all": {}}

    def sample(self, gen, batch_size, split, facts: int | None = None):
        if self.params.data_dir is not None:
            d = self.data[split]
            pick = torch.randint(len(d["answer"]), (batch_size,), generator=gen)
            tokens, answer, support = d["tokens"][pick], d["answer"][pick], d["support"][pick]
        else:
            tokens, answer, support = generate(gen, batch_size, split, self.params.family, facts or self.params.facts,
                                               1 + self.params.distractors)
        targets, mask = last_position_batch(answer, tokens.shape[1])
        return Batch(tokens, targets, mask, {"answer": answer, "support": support})

    def score(self, logits, batch):
        return {"error": 1 - last_position_accuracy(logits, batch)}


# -- generated stories ----------------------------------------------------------------------------------

def generate(gen: torch.Generator, n: int, split: str, family: int, facts: int, actors: int):
    """n stories of the split's hash bucket: (tokens (n, (facts+1)*8), answer (n,), support (n, 3))."""
    if split not in SPLIT_BUCKETS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLIT_BUCKETS)}")
    buckets = torch.tensor(list(SPLIT_BUCKETS[split]))
    kept, have, rate = [], 0, len(buckets) / 10  # rate: the expected fraction of candidates kept, refined as we go
    for _ in range(20):
        m = int((n - have) / rate * 1.25) + 16
        tokens, answer, support, valid = simulate(gen, m, family, facts, actors)
        keep = valid & torch.isin(story_hash(tokens[:, : facts * SENTENCE_LEN]) % 10, buckets)
        kept.append((tokens[keep], answer[keep], support[keep]))
        have += int(keep.sum())
        if have >= n:
            return tuple(torch.cat(parts)[:n] for parts in zip(*kept, strict=True))
        rate = max(int(keep.sum()) / m, 0.01)
    raise RuntimeError(f"babi: too few answerable stories of family {family} with {facts} facts; use more facts")


@lru_cache(maxsize=16)
def _powers(length: int) -> torch.Tensor:
    p = [1]
    for _ in range(length - 1):
        p.append(p[-1] * HASH_BASE % HASH_P)
    return torch.tensor(p)


def story_hash(tokens: torch.Tensor) -> torch.Tensor:
    """A polynomial hash mod 2^31-1 of each row of tokens: a fixed function of the story's content."""
    return (tokens * _powers(tokens.shape[1])).sum(1) % HASH_P


def simulate(gen: torch.Generator, n: int, family: int, facts: int, actors: int):
    """Play n random worlds for `facts` sentences (vectorised over stories) and ask one question of each.

    Returns tokens, answer token, supporting sentence indices (n, 3), and
    whether the story has an answerable question (family 2/3 need an object
    that was picked up / carried somewhere).  Random draws come from `gen`;
    the sequential world update runs on numpy views, whose per-op overhead
    is a fraction of torch's for arrays this small.
    """
    F, L = facts, len(LOCATIONS)
    actor_t = torch.randint(actors, (n, F), generator=gen)
    u = torch.rand(n, F, generator=gen).numpy()
    draw = torch.randint(L, (n, F), generator=gen).numpy()
    obj_key = torch.rand(n, F, actors, generator=gen).numpy()
    key = torch.rand(n, actors, generator=gen).numpy()
    q1 = torch.randint(F, (n,), generator=gen).numpy()
    phrasing = torch.randint(4, (n, F), generator=gen)
    actor, rows = actor_t.numpy(), np.arange(n)
    want = np.where(u < 0.5, MOVE, np.where(u < 0.8, PICK, DROP)) if family > 1 else np.zeros((n, F), np.int64)
    none = np.full((n, actors), -1)
    loc, last_move = none.copy(), none.copy()  # per person; location -1: not yet mentioned
    spot = np.full((n, actors), UNSEEN)  # per object: location where it lies, HELD, or UNSEEN (never picked up yet)
    holder, pick_t, drop_t, drop_move = none.copy(), none.copy(), none.copy(), none.copy()
    tr_src, tr_prev, tr_pick, tr_move = none.copy(), none.copy(), none.copy(), none.copy()  # latest carried move
    act, obj, dest = (np.zeros((n, F), np.int64) for _ in range(3))
    for t in range(F):
        a = actor[:, t]
        here = loc[rows, a]
        mine = holder == a[:, None]
        free = ((spot == here[:, None]) | (spot == UNSEEN)) & (here >= 0)[:, None]
        kind = want[:, t].copy()
        kind[(kind == PICK) & ~free.any(1)] = MOVE
        kind[(kind == DROP) & ~mine.any(1)] = MOVE
        o = np.where(np.where(kind[:, None] == PICK, free, mine), obj_key[:, t], -1.0).argmax(1)
        new = np.where(here < 0, draw[:, t], (here + 1 + draw[:, t] % (L - 1)) % L)
        carried = mine & (kind == MOVE)[:, None]
        tr_src = np.where(carried, here[:, None], tr_src)
        tr_prev = np.where(carried, last_move[rows, a][:, None], tr_prev)
        tr_pick = np.where(carried, pick_t, tr_pick)
        tr_move[carried] = t
        m, p, d = kind == MOVE, kind == PICK, kind == DROP
        loc[rows[m], a[m]] = new[m]
        last_move[rows[m], a[m]] = t
        holder[rows[p], o[p]], spot[rows[p], o[p]], pick_t[rows[p], o[p]] = a[p], HELD, t
        holder[rows[d], o[d]], spot[rows[d], o[d]], drop_t[rows[d], o[d]] = -1, here[d], t
        drop_move[rows[d], o[d]] = last_move[rows[d], a[d]]
        act[:, t], obj[:, t], dest[:, t] = kind, o, new
    # one question per story, about a random eligible subject
    support = np.full((n, 3), -1)
    if family == 1:
        q = actor[rows, q1]
        answer, valid = loc[rows, q], np.ones(n, bool)
        support[:, 0] = last_move[rows, q]
    elif family == 2:
        eligible = pick_t >= 0
        q = np.where(eligible, key, -1.0).argmax(1)
        h = holder[rows, q]
        held = h >= 0
        answer = np.where(held, loc[rows, np.maximum(h, 0)], spot[rows, q])
        support[:, :2] = np.sort(np.where(
            held[:, None],
            np.stack([pick_t[rows, q], last_move[rows, np.maximum(h, 0)]], 1),
            np.stack([drop_t[rows, q], drop_move[rows, q]], 1),
        ), 1)
        valid = eligible.any(1)
    else:
        eligible = tr_move >= 0
        q = np.where(eligible, key, -1.0).argmax(1)
        answer = tr_src[rows, q]
        support = np.sort(np.stack([tr_prev[rows, q], tr_pick[rows, q], tr_move[rows, q]], 1), 1)
        valid = eligible.any(1)
    act, obj, dest, q = (torch.from_numpy(x) for x in (act, obj, dest, q))
    where_to = dest[torch.arange(n), torch.from_numpy(tr_move)[torch.arange(n), q].clamp_min(0)]
    # words: fill each sentence's template with its person, location and object
    story = TEMPLATES[act * 4 + phrasing]
    story = torch.where(story == _P, ID[PEOPLE[0]] + actor_t[..., None], story)
    story = torch.where(story == _L, ID[LOCATIONS[0]] + dest[..., None], story)
    story = torch.where(story == _O, ID[OBJECTS[0]] + obj[..., None], story)
    question = QUESTIONS[family].expand(n, SENTENCE_LEN)
    question = torch.where(question == _P, ID[PEOPLE[0]] + q[:, None], question)
    question = torch.where(question == _O, ID[OBJECTS[0]] + q[:, None], question)
    question = torch.where(question == _L, ID[LOCATIONS[0]] + where_to[:, None], question)
    tokens = torch.cat([story.reshape(n, F * SENTENCE_LEN), question], 1)
    answer = ID[LOCATIONS[0]] + torch.from_numpy(answer).clamp_min(0)
    return tokens, answer, torch.from_numpy(support), torch.from_numpy(valid)


# -- the real bAbI files ---------------------------------------------------------------------------------

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


@cache
def load_files(data_dir: str, family: int, facts: int) -> tuple[tuple[str, ...], dict[str, dict[str, torch.Tensor]]]:
    """Vocabulary and encoded splits of the bAbI task `family`: train (90% of the train file), val (10%), test."""
    folder = Path(data_dir).expanduser()
    files = {}
    for part in ("train", "test"):
        found = sorted(folder.glob(f"qa{family}_*_{part}.txt"))
        if not found:
            raise FileNotFoundError(f"babi: no bAbI file {folder / f'qa{family}_*_{part}.txt'} (data_dir should be e.g. "
                                    f"tasks_1-20_v1-2/en-10k; nothing is downloaded)")
        files[part] = parse(found[0])
    seen = {w for ex in files["train"] + files["test"] for w in [*(w for s in ex[0] for w in s), *ex[1], ex[2]]}
    vocab = VOCAB + tuple(sorted(seen - set(VOCAB)))
    cut = len(files["train"]) * 9 // 10
    parts = {"train": files["train"][:cut], "val": files["train"][cut:], "test": files["test"]}
    return vocab, {k: encode(v, {w: i for i, w in enumerate(vocab)}, facts) for k, v in parts.items()}


def encode(examples, ids: dict[str, int], facts: int) -> dict[str, torch.Tensor]:
    """Pad each story to `facts` sentences (empty ones first, most recent kept) and right-align the question."""
    tokens = torch.zeros(len(examples), (facts + 1) * SENTENCE_LEN, dtype=torch.long)
    support = torch.full((len(examples), 3), -1)
    for i, (story, question, _, sup) in enumerate(examples):
        kept = story[-facts:]
        offset = facts - len(kept)
        for j, sentence in enumerate([*kept, question]):
            if len(sentence) > SENTENCE_LEN:
                raise ValueError(f"babi: sentence {' '.join(sentence)!r} is longer than {SENTENCE_LEN} tokens")
            start = (offset + j) * SENTENCE_LEN + (SENTENCE_LEN - len(sentence) if j == len(kept) else 0)
            tokens[i, start : start + len(sentence)] = torch.tensor([ids[w] for w in sentence])
        moved = [s - (len(story) - len(kept)) + offset for s in sup][:3]
        support[i, : len(moved)] = torch.tensor([s if s >= offset else -1 for s in moved])
    answers = torch.tensor([ids[ex[2]] for ex in examples])
    return {"tokens": tokens, "answer": answers, "support": support}
