"""bAbI-style question answering (Weston et al. 2015, tasks 1-3): generated stories, or the real bAbI 10k files.

Generated stories simulate a small world: people move between locations and
pick up / drop objects (an object moves with whoever holds it).  Family 1
asks "where is PERSON ?" (one supporting fact), family 2 "where is the
OBJECT ?" (two: who holds or dropped it, and where they were), family 3
"where was the OBJECT before the LOCATION ?" (three: where the carrier was,
that it carried the object, and its move to LOCATION), as in bAbI.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from pydantic import model_validator

from amlab.workloads.registry import Params, knob, task
from amlab.workloads.tasks._babi_files import babi_files, load_files
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
UNSEEN = (1 << len(LOCATIONS)) - 1  # state of an object never picked up yet: it may be picked up anywhere
LOC_BIT = np.array([1 << loc for loc in range(len(LOCATIONS))] + [0])  # [-1]: a person not yet placed is nowhere
NEXT = np.array([[(here + 1 + d % (len(LOCATIONS) - 1)) % len(LOCATIONS) for d in range(len(LOCATIONS))]
                 for here in range(len(LOCATIONS))] + [list(range(len(LOCATIONS)))])  # [here, draw] -> where a move goes


def _row(codes: list) -> list[int]:
    ids = [c if isinstance(c, int) else ID[c] for c in codes]
    return ids + [0] * (SENTENCE_LEN - len(ids))


TEMPLATES = np.array([_row([_P, *phrase, _L if action == MOVE else _O, "."])
                      for action, phrases in enumerate(_PHRASES) for phrase in phrases])  # row: action * 4 + phrasing
FILLER_AT = (TEMPLATES < _P).argmax(1)  # each template's location / object position (the person is always first)
_QUESTIONS = {  # right-aligned so that "?" is the last input token and the answer is predicted there
    1: np.roll(_row(["where", "is", _P, "?"]), 4),
    2: np.roll(_row(["where", "is", "the", _O, "?"]), 3),
    3: np.array(_row(["where", "was", "the", _O, "before", "the", _L, "?"])),
}
QUESTIONS = {f: (q, (q == _P) | (q == _O), q == _L) for f, q in _QUESTIONS.items()}  # words, subject slot, place slot
SPLIT_BUCKETS = {"train": range(0, 8), "val": range(8, 9), "test": range(9, 10)}  # story hash mod 10
HASH_P, HASH_BASE = 2_147_483_647, 1_000_003
MISS = 0.005  # chance that none of a world's random phrasings lands in the split's buckets (the world is then dropped)
ANSWERABLE_GUESS = {1: 1.0, 2: 0.8, 3: 0.4}  # first guess of the fraction of worlds with a question (default sizes)


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
        if self.data_dir is not None and isinstance(missing := babi_files(self.data_dir, self.family), str):
            raise ValueError(f"data_dir: {missing}")  # found before Ray starts, not in a trial
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
        self.pad_token = ID["<pad>"]  # sentences are padded to SENTENCE_LEN; the model embeds padding to zero
        if params.data_dir is None:
            self.vocab = VOCAB
            self.chance = 1 - 1 / len(LOCATIONS)  # answers are uniform over the locations
        else:
            self.vocab, self.data = load_files(params.data_dir, params.family, params.facts, VOCAB, SENTENCE_LEN)
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
    """n stories of the split's hash bucket: (tokens (n, (facts+1)*8), answer (n,), support (n, 3)).

    Candidate worlds are simulated, then worded so as to land in the split's
    bucket (`phrase`); worlds without an answerable question, or without an
    in-bucket wording among `tries`, are dropped and more are drawn.
    """
    if split not in SPLIT_BUCKETS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLIT_BUCKETS)}")
    buckets = SPLIT_BUCKETS[split]
    tries = math.ceil(math.log(MISS) / math.log(1 - len(buckets) / 10))
    kept, have, rate = [], 0, ANSWERABLE_GUESS[family]  # rate: the expected fraction of worlds kept, refined as we go
    for _ in range(20):
        m = math.ceil((n - have) / rate * 1.1) + 8
        act, actor, filler, question, answer, support, valid = simulate(gen, m, family, facts, actors)
        keep = np.flatnonzero(valid)[: n - have + 4]  # spares for worlds that find no in-bucket phrasing
        template, inside = phrase(gen, act[keep], actor[keep], filler[keep], buckets, tries)
        template, keep = template[inside][: n - have], keep[inside][: n - have]
        story = sentences(template, actor[keep], filler[keep]).reshape(len(keep), -1)
        kept.append((np.concatenate([story, question[keep]], 1), answer[keep], support[keep]))
        have += len(keep)
        if have == n:
            return tuple(torch.from_numpy(np.concatenate(parts)) for parts in zip(*kept, strict=True))
        rate = max(len(keep) / m, 0.01)
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


@lru_cache(maxsize=16)
def _sentence_terms(facts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`story_hash` split by sentence t and template r: fixed words' term (F, 12), person's weight (F, 1), filler's (F, 12)."""
    w = _powers(facts * SENTENCE_LEN).numpy().reshape(facts, SENTENCE_LEN)
    return (w @ np.maximum(TEMPLATES, 0).T) % HASH_P, w[:, :1], w[:, FILLER_AT]


def phrase(gen: torch.Generator, act: np.ndarray, actor: np.ndarray, filler: np.ndarray, buckets: range, tries: int):
    """Pick each sentence's phrasing (template row) so that the story's `story_hash` falls in `buckets`.

    The hash is a sum of per-sentence terms, so the four phrasings of every
    sentence are hashed once, and `tries` independent uniform phrasings of a
    story cost one gather and one sum; the first that lands in the buckets is
    kept, which is a uniform draw among the story's in-bucket phrasings (so
    the split's stories keep the generator's distribution, up to weighting
    each world by its chance of a hit, 1 - (1 - f)^tries with f its share of
    in-bucket phrasings: about 1 - `MISS` for every world with more than a
    few sentences).  Returns templates (n, facts) and whether one landed (n,).
    """
    n, F = act.shape
    fixed, person_w, filler_w = _sentence_terms(F)
    at = np.arange(F)[:, None]
    template = act[..., None] * 4 + np.arange(4)  # (n, F, 4)
    terms = (fixed[at, template] + (ID[PEOPLE[0]] + actor[..., None]) * person_w + filler[..., None] * filler_w[at, template])
    choice = torch.randint(4, (n, tries, F), generator=gen).numpy()
    h = (terms % HASH_P).reshape(-1)[np.arange(0, n * F * 4, F * 4)[:, None, None] + 4 * at[:, 0] + choice]
    h = h.sum(2) % HASH_P % 10
    hit = (h >= buckets.start) & (h < buckets.stop)
    return act * 4 + choice[np.arange(n), hit.argmax(1)], hit.any(1)


def sentences(template: np.ndarray, actor: np.ndarray, filler: np.ndarray) -> np.ndarray:
    """The words (n, F, 8) of templates filled with their person and location / object."""
    words = TEMPLATES[template]
    return np.where(words >= 0, words, np.where(words == _P, ID[PEOPLE[0]] + actor[..., None], filler[..., None]))


def simulate(gen: torch.Generator, n: int, family: int, facts: int, actors: int):
    """Play n random worlds for `facts` sentences (vectorised over stories) and ask one question of each.

    Returns each sentence's action and person (n, facts), its location or
    object token, the question tokens (n, 8), the answer token, supporting
    sentence indices (n, 3), and whether the story has an answerable
    question (family 2/3 need an object that was picked up / carried
    somewhere).  Random draws come from `gen`.  A person's first sentence is
    always a move, so in family 1 (moves only) locations are cumulative sums
    and need no loop.  Families 2/3 loop over sentences with the few numpy
    ops that decide each action (objects' whereabouts as bitmasks, so one
    `&` finds the candidates; numpy's per-op overhead is a fraction of
    torch's for arrays this small); answers and supporting facts are then
    read off the recorded actions.
    """
    F, L, A = facts, len(LOCATIONS), actors  # arrays are time-major: (F, n, ...)
    rows, steps = np.arange(n), np.arange(F)[:, None]
    support = np.full((n, 3), -1)
    if family == 1:
        draw = torch.randint(A * L, (F, n), generator=gen).numpy()
        actor, draw = draw % A, draw // A
        q = actor[torch.randint(F, (n,), generator=gen).numpy(), rows]
        own = actor[..., None] == np.arange(A)  # (F, n, A): sentence t is about person a
        first = own.argmax(0)[rows, actor] == steps
        step = np.where(first, draw + 1, 1 + draw % (L - 1))  # a move goes to (here + step) % L, here = -1 before the first
        dest = ((own * step[..., None]).cumsum(0) - 1)[own].reshape(F, n) % L
        support[:, 0] = np.where(actor == q, steps, -1).max(0)
        act, obj, valid = np.full((F, n), MOVE), np.zeros((F, n), np.int64), np.ones(n, bool)
        answer, place = dest[support[:, 0], rows], q
    else:
        draw = torch.randint(A * L * 10, (F, n), generator=gen).numpy()
        actor, want = draw % A, draw // (A * L)  # want: 0-4 move, 5-7 pick up, 8-9 drop
        draw, want = draw // A % L, want // 5 + want // 8
        keys = 1 - torch.rand(F + 1, n, A, generator=gen).numpy()  # in (0, 1], so 0 can mark "not a candidate"
        wants_pick, hold = want == PICK, 1 << (L + actor)  # hold: the state bit of "held by this sentence's person"
        state = np.full((n, A), UNSEEN)  # per object, a bitmask: bit l < L lies at location l, bit L + p held by person p
        flat, loc, base = state.reshape(-1), np.full(n * A, -1), rows * A
        at = base + actor
        act, obj, dest = np.zeros((F, n), np.int64), np.zeros((F, n), np.int64), np.zeros((F, n), np.int64)
        holds = np.zeros((F, n, A), np.int64) if family == 3 else None
        for t in range(F):  # candidates: objects lying here (to pick up) or held (to drop); with none the person moves
            i, wp, hb = at[t], wants_pick[t], hold[t]
            here = loc[i]
            bit = LOC_BIT[here]  # 0 before a person's first move: nothing to pick up
            score = np.where(state & np.where(wp, bit, hb)[:, None], keys[t], 0.0)
            o = score.argmax(1)
            j = base + o
            act[t] = a = want[t] * (score.take(j) > 0)
            new = NEXT[here, draw[t]]
            loc[i] = np.where(a, here, new)
            flat[j] = np.where(a, np.where(wp, hb, bit), flat[j])
            obj[t], dest[t] = o, new
            if holds is not None:
                holds[t] = state & hb[:, None]  # what the person holds (after a pick-up / drop; unchanged by a move)
        move = act == MOVE
        if family == 2:
            valid = (state != UNSEEN).any(1)
            q = np.where(state != UNSEEN, keys[F], -1.0).argmax(1)
            held = state[rows, q] > UNSEEN
            event = np.where((act == np.where(held, PICK, DROP)) & (obj == q), steps, -1).max(0)  # latest pick-up / drop
            by = move & (actor == actor[event, rows]) & (steps <= np.where(held, F - 1, event))
            last = np.where(by, steps, -1).max(0)  # where its holder / dropper was last moved to
            answer, place = dest[last, rows], q
            support[:, 0], support[:, 1] = np.minimum(event, last), np.maximum(event, last)
        else:
            trip = np.where((holds > 0) & move[..., None], steps[..., None], -1).max(0)  # (n, A) latest carried move
            valid = (trip >= 0).any(1)
            q = np.where(trip >= 0, keys[F], -1.0).argmax(1)
            tm = np.maximum(trip[rows, q], 0)
            earlier = steps < tm
            prev = np.where(move & (actor == actor[tm, rows]) & earlier, steps, -1).max(0)
            picked = np.where((act == PICK) & (obj == q) & earlier, steps, -1).max(0)
            answer, place = dest[prev, rows], dest[tm, rows]
            support[:, 0], support[:, 1], support[:, 2] = np.minimum(prev, picked), np.maximum(prev, picked), tm
    filler = np.where(act == MOVE, ID[LOCATIONS[0]] + dest, ID[OBJECTS[0]] + obj).T
    words, is_subject, is_place = QUESTIONS[family]
    subject = ID[PEOPLE[0] if family == 1 else OBJECTS[0]] + q[:, None]
    question = np.where(is_subject, subject, np.where(is_place, ID[LOCATIONS[0]] + place[:, None], words))
    act, actor = act.T, actor.T
    return act, actor, filler, question, ID[LOCATIONS[0]] + answer, support, valid
