"""Data tasks (babi, seq_digits, char_lm, needle_doc, cluttered_digits, moving_digits): structure, splits, chance.

Each structural test re-derives what a batch must hold from its raw
ingredients (the digit images, the text, a replay of the story) rather
than trusting the generator's own bookkeeping.
"""

from __future__ import annotations

import collections
import math

import pytest
import torch
from pydantic import ValidationError

from amlab.workloads.registry import TASKS
from amlab.workloads.tasks import _digits
from amlab.workloads.tasks.babi import LOCATIONS, VOCAB
from amlab.workloads.tasks.base import generator
from amlab.workloads.tasks.char_lm import load_text, region
from amlab.workloads.tasks.seq_digits import pixel_order

MINE = ("babi", "seq_digits", "char_lm", "needle_doc", "cluttered_digits", "moving_digits")


def build(name, **params):
    entry = TASKS.get(name)
    return entry.build(entry.params(**params))


def batch_of(task, seed=0, n=8, split="train", **group):
    return task.sample(generator(seed, split), n, split, **group)


def perfect_logits(task, batch):
    """Logits whose arg-max is the target at every position (one-hot, large margin)."""
    return torch.nn.functional.one_hot(batch.targets, task.output_size).float() * 20


# -- shared contract ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MINE)
def test_deterministic_given_the_generator_and_seed_dependent(name):
    task = build(name)
    a, b, c = batch_of(task, 0), batch_of(task, 0), batch_of(task, 1)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets) and torch.equal(a.mask, b.mask)
    assert all(torch.equal(a.meta[k], b.meta[k]) for k in a.meta)
    assert not torch.equal(a.inputs, c.inputs)


@pytest.mark.parametrize("name", MINE)
def test_targets_in_range_zero_off_mask_and_perfect_logits_score_perfectly(name):
    entry, task = TASKS.get(name), build(name)
    for split in ("train", "val", "test"):
        for group in task.eval_groups(split).values():
            b = batch_of(task, 3, 6, split, **group)
            assert b.targets.dtype == torch.long and b.mask.dtype == torch.bool and b.mask.shape == b.targets.shape
            assert 0 <= int(b.targets.min()) and int(b.targets.max()) < task.output_size
            assert not b.targets[~b.mask].any()
            scores = task.score(perfect_logits(task, b), b)
            assert set(scores) == set(entry.metrics)
            best = 0.0 if not entry.higher_is_better else 1.0
            assert scores[entry.metric] == pytest.approx(best, abs=1e-3)


def test_registered_entries_declare_what_the_platform_needs():
    expect = {
        "babi": ("tokens", "error", False), "seq_digits": ("real", "accuracy", True), "char_lm": ("tokens", "bpc", False),
        "needle_doc": ("tokens", "accuracy", True), "cluttered_digits": ("image", "accuracy", True),
        "moving_digits": ("video", "accuracy", True),
    }
    for name, (modality, metric, higher) in expect.items():
        e = TASKS.get(name)
        assert (e.modality, e.loss, e.metric, e.higher_is_better) == (modality, "ce", metric, higher)
        assert e.paper and e.describe()["params"]


# -- digits partition -----------------------------------------------------------------------------------

def test_digit_partitions_are_disjoint_cover_all_images_and_samples_stay_inside():
    parts = {s: set(_digits.partition(s).tolist()) for s in ("train", "val", "test")}
    assert sum(map(len, parts.values())) == len(set().union(*parts.values())) == 1797
    assert not (parts["train"] & parts["val"] or parts["train"] & parts["test"] or parts["val"] & parts["test"])
    for name in ("seq_digits", "cluttered_digits", "moving_digits"):
        for split in ("train", "val", "test"):
            assert set(batch_of(build(name), 5, 64, split).meta["index"].tolist()) <= parts[split]


# -- seq_digits ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("permuted", [False, True])
def test_seq_digits_is_the_flattened_image_and_its_label(permuted):
    task = build("seq_digits", permuted=permuted)
    b = batch_of(task, 2, 16)
    images, labels = _digits.digits()
    flat = images[b.meta["index"]].reshape(16, 64)
    order = pixel_order() if permuted else torch.arange(64)
    assert b.inputs.shape == (16, 64, 1)
    assert torch.equal(b.inputs[..., 0], flat[:, order])
    assert torch.equal(b.targets[:, -1], labels[b.meta["index"]])
    assert b.mask[:, -1].all() and b.mask.sum() == 16
    if permuted:
        assert sorted(order.tolist()) == list(range(64)) and not torch.equal(order, torch.arange(64))


# -- char_lm -------------------------------------------------------------------------------------------

def test_char_lm_target_is_the_input_shifted_by_one_from_the_text():
    task = build("char_lm", context=32)
    text = load_text(None)
    b = batch_of(task, 0, 8)
    assert torch.equal(b.targets[:, :-1], b.inputs[:, 1:]) and b.mask.all()
    for s, x, y in zip(b.meta["start"].tolist(), b.inputs, b.targets, strict=True):
        assert torch.equal(x, text[s : s + 32].long()) and int(y[-1]) == int(text[s + 32])


def test_char_lm_regions_are_disjoint_and_windows_stay_inside_their_region():
    task = build("char_lm", context=64)
    text = load_text(None)
    spans = [region(text, s) for s in ("train", "val", "test")]
    assert spans[0][0] == 0 and spans[0][1] == spans[1][0] and spans[1][1] == spans[2][0] and spans[2][1] == len(text)
    for split, (lo, hi) in zip(("train", "val", "test"), spans, strict=True):
        starts = batch_of(task, 1, 256, split).meta["start"]
        assert int(starts.min()) >= lo and int(starts.max()) + 64 + 1 <= hi


def test_char_lm_reads_a_user_file_and_its_chance_is_the_unigram_baseline(tmp_path):
    text = (b"abracadabra " * 100) + b"zzzz" * 30  # test region (last 5%) is mostly z: unseen-ish bytes cost bits
    path = tmp_path / "corpus.txt"
    path.write_bytes(text)
    task = build("char_lm", path=str(path), context=8, test_contexts=(8,))
    train, test = text[: int(0.9 * len(text))], text[int(0.95 * len(text)) :]
    counts = collections.Counter(train)
    total = len(train) + 256  # add-one smoothing over all byte values
    expected = -sum(math.log2((counts[c] + 1) / total) for c in test) / len(test)
    assert task.chance == pytest.approx(expected, rel=1e-9)
    b = batch_of(task, 0, 4, "test")
    assert torch.equal(b.inputs[0], torch.tensor(list(text[int(b.meta["start"][0]) :][:8])))
    # uniform logits cost exactly 8 bits per byte
    assert task.score(torch.zeros(4, 8, 256), b)["bpc"] == pytest.approx(8.0)


def test_char_lm_missing_file_is_a_clear_error_naming_the_path(tmp_path):
    missing = tmp_path / "no_such_enwik8"
    with pytest.raises(ValidationError, match="no_such_enwik8"):  # found when the spec is validated
        build("char_lm", path=str(missing))


# -- needle_doc ----------------------------------------------------------------------------------------

def test_needle_doc_label_is_the_class_word_of_the_one_marked_sentence():
    task = build("needle_doc")
    p = task.params
    b = batch_of(task, 4, 32)
    docs = b.inputs.view(32, p.sentences, p.words)
    is_class = (docs >= 2) & (docs < 2 + p.classes)
    assert (is_class.sum(-1) == 1).all()  # class words are everywhere: one per sentence
    marked = (docs == 1).any(-1)
    assert (marked.sum(-1) == 1).all() and torch.equal(marked.float().argmax(-1), b.meta["key_sentence"])
    key_words = docs[torch.arange(32), b.meta["key_sentence"]]
    label = (key_words[(key_words >= 2) & (key_words < 2 + p.classes)] - 2)
    assert torch.equal(label, b.targets[:, -1]) and b.mask[:, -1].all() and b.mask.sum() == 32
    assert len(set(b.meta["key_sentence"].tolist())) > 1


# -- cluttered_digits ----------------------------------------------------------------------------------

def test_cluttered_digits_canvas_holds_the_digit_at_the_recorded_place():
    task = build("cluttered_digits")
    p = task.params
    b = batch_of(task, 6, 16)
    images, labels = _digits.digits()
    assert b.inputs.shape == (16, 1, *task.image_size) and task.input_size == 1 and task.output_size == 10
    assert 0 <= float(b.inputs.min()) and float(b.inputs.max()) <= 1
    assert b.targets.shape == b.mask.shape == (16, 1) and b.mask.all()
    assert torch.equal(b.targets[:, 0], labels[b.meta["index"]])
    s = 8 * p.scale
    for img, (y, x), i in zip(b.inputs[:, 0], b.meta["position"].tolist(), b.meta["index"], strict=True):
        digit = images[i].repeat_interleave(p.scale, 0).repeat_interleave(p.scale, 1)
        assert (img[y : y + s, x : x + s] >= digit).all()
    assert (b.inputs.flatten(1) > 0).sum(1).float().mean() > (images > 0).sum((1, 2)).float().mean() * p.scale**2  # clutter


def test_cluttered_digits_without_clutter_is_exactly_the_digit_on_black():
    task = build("cluttered_digits", clutter=0, scale=1, canvas=20, test_canvas=20)
    b = batch_of(task, 7, 8)
    images = _digits.digits()[0]
    for img, (y, x), i in zip(b.inputs[:, 0], b.meta["position"].tolist(), b.meta["index"], strict=True):
        expected = torch.zeros(20, 20)
        expected[y : y + 8, x : x + 8] = images[i]
        assert torch.equal(img, expected)


# -- moving_digits -------------------------------------------------------------------------------------

def test_moving_digits_deciding_frames_hold_the_digit():
    task = build("moving_digits")
    p = task.params
    b = batch_of(task, 8, 16)
    images, labels = _digits.digits()
    assert b.inputs.shape == (16, task.frames, 1, *task.image_size) and b.targets.shape == b.mask.shape == (16, 1)
    assert torch.equal(b.targets[:, 0], labels[b.meta["index"]])
    key = b.meta["key_frames"]
    assert key.shape == (16, p.key_frames) and (key[:, 1:] > key[:, :-1]).all() and int(key.max()) < p.frames
    clips = zip(b.inputs[:, :, 0], key.tolist(), b.meta["position"].tolist(), b.meta["index"], strict=True)
    for clip, frames, places, i in clips:
        for f, (y, x) in zip(frames, places, strict=True):
            assert (clip[f, y : y + 8, x : x + 8] >= images[i]).all()


def test_moving_digits_without_noise_or_clutter_only_deciding_frames_are_lit():
    task = build("moving_digits", clutter=0, noise=0.0, key_frames=1)
    b = batch_of(task, 9, 8)
    images = _digits.digits()[0]
    for clip, (f,), ((y, x),), i in zip(b.inputs[:, :, 0], b.meta["key_frames"].tolist(), b.meta["position"].tolist(),
                                         b.meta["index"], strict=True):
        expected = torch.zeros_like(clip)
        expected[f, y : y + 8, x : x + 8] = images[i]
        assert torch.equal(clip, expected)


# -- babi ----------------------------------------------------------------------------------------------

MOVES = {"moved", "went", "journeyed", "travelled"}
PICKS = {"picked", "got", "grabbed", "took"}
DROPS = {"dropped", "discarded", "left", "put"}


def words_of(tokens):
    """(story sentences, question) as word lists, from a babi row (8 tokens per sentence)."""
    rows = [[VOCAB[t] for t in s if t] for s in tokens.view(-1, 8).tolist()]
    return rows[:-1], rows[-1]


def replay(story, question):
    """An independent reading of a story: check the world stays consistent, answer the question from scratch.

    Returns (answer word, sorted supporting sentence indices).
    """
    loc, last_move, holder, lying, picked_at, dropped = {}, {}, {}, {}, {}, {}
    trips = collections.defaultdict(list)  # object -> (from, to, carrier's previous move, pick, move) per carried move
    for i, (person, verb, *_, noun, dot) in enumerate(story):
        assert dot == "."
        if verb in MOVES:
            assert noun in LOCATIONS and noun != loc.get(person), "people move somewhere new"
            for obj, who in holder.items():
                if who == person:
                    trips[obj].append((loc[person], noun, last_move[person], picked_at[obj], i))
            loc[person], last_move[person] = noun, i
        elif verb in PICKS:
            assert person in loc and noun not in holder and lying.get(noun, loc[person]) == loc[person], "pick up what lies here"
            holder[noun], picked_at[noun] = person, i
            lying.pop(noun, None)
        else:
            assert verb in DROPS and holder.get(noun) == person, "drop only what you hold"
            del holder[noun]
            lying[noun], dropped[noun] = loc[person], (i, last_move[person])
    if question[1] == "is" and question[2] != "the":  # where is PERSON ?
        return loc[question[2]], [last_move[question[2]]]
    obj = question[3]
    if question[1] == "is":  # where is the OBJECT ?
        if obj in holder:
            return loc[holder[obj]], sorted([picked_at[obj], last_move[holder[obj]]])
        return lying[obj], sorted(dropped[obj])
    src, _, prev, pick, move = [t for t in trips[obj] if t[1] == question[6]][-1]  # where was the OBJECT before the PLACE ?
    return src, sorted([prev, pick, move])


@pytest.mark.parametrize("family", [1, 2, 3])
@pytest.mark.parametrize("split,facts", [("train", None), ("test", 20)])
def test_babi_answer_and_supporting_facts_follow_from_replaying_the_story(family, split, facts):
    task = build("babi", family=family)
    group = {"facts": facts} if facts else {}
    b = batch_of(task, family, 48, split, **group)
    n = facts or task.params.facts
    assert b.inputs.shape == (48, (n + 1) * 8) and b.mask[:, -1].all() and b.mask.sum() == 48
    assert torch.equal(b.targets[:, -1], b.meta["answer"])
    for row, answer, support in zip(b.inputs, b.meta["answer"].tolist(), b.meta["support"].tolist(), strict=True):
        story, question = words_of(row)
        assert len(story) == n and question[-1] == "?" and row[-1] == VOCAB.index("?")
        expect_answer, expect_support = replay(story, question)
        assert VOCAB[answer] == expect_answer
        assert [s for s in support if s >= 0] == expect_support and len(expect_support) == family


def test_babi_test_and_val_stories_never_occur_in_training():
    # a tiny story space (one person, two moves: 6 * 5 places * 16 phrasings) where overlap would be certain
    task = build("babi", facts=2, distractors=0, test_facts=(2,))

    def stories(split, batches):
        return {tuple(row[:16].tolist()) for i in range(batches) for row in batch_of(task, i, 64, split).inputs}

    train, val, test = stories("train", 40), stories("val", 10), stories("test", 10)
    assert len(train) > 300 and len(val) > 20 and len(test) > 20
    assert not (train & test) and not (train & val) and not (val & test)


@pytest.mark.parametrize("family", [1, 2, 3])
def test_babi_stories_lie_in_their_splits_part_of_the_story_space(family):
    # the partition, recomputed here: polynomial hash (base 1_000_003 mod 2^31-1) of the story tokens, mod 10
    task = build("babi", family=family)
    n = task.params.facts * 8
    for split, part in {"train": range(8), "val": [8], "test": [9]}.items():
        for row in batch_of(task, family, 32, split).inputs[:, :n].tolist():
            assert sum(t * pow(1_000_003, i, 2**31 - 1) for i, t in enumerate(row)) % (2**31 - 1) % 10 in part


def test_babi_chance_is_the_error_of_always_naming_one_place():
    task = build("babi", family=2)
    answers = torch.cat([batch_of(task, i, 128, "val").meta["answer"] for i in range(8)])
    assert set(answers.tolist()) <= {VOCAB.index(w) for w in LOCATIONS}
    majority_error = 1 - torch.bincount(answers).max().item() / len(answers)
    assert task.chance == pytest.approx(1 - 1 / 6) and majority_error == pytest.approx(task.chance, abs=0.05)


BABI_TRAIN = """1 Mary moved to the bathroom.
2 John went to the hallway.
3 Where is Mary? \tbathroom\t1
4 Daniel went back to the hallway.
5 Sandra moved to the garden.
6 Where is Daniel? \thallway\t4
1 Sandra travelled to the office.
2 Where is Sandra? \toffice\t1
"""


def test_babi_reads_the_real_file_format(tmp_path):
    (tmp_path / "qa1_single-supporting-fact_train.txt").write_text(BABI_TRAIN * 5)
    (tmp_path / "qa1_single-supporting-fact_test.txt").write_text(BABI_TRAIN)
    task = build("babi", data_dir=str(tmp_path), facts=3)
    assert "back" in task.vocab and task.input_size == task.output_size == len(task.vocab)
    assert task.eval_groups("test") == {"all": {}}
    data = task.data["test"]
    assert data["tokens"].shape == (3, 4 * 8)
    words = [[[task.vocab[t] for t in s if t] for s in row.view(-1, 8).tolist()] for row in data["tokens"]]
    assert words[0] == [[], ["mary", "moved", "to", "the", "bathroom", "."], ["john", "went", "to", "the", "hallway", "."],
                        ["where", "is", "mary", "?"]]
    assert words[1][0] == ["john", "went", "to", "the", "hallway", "."]  # facts=3 keeps the three most recent
    assert [task.vocab[a] for a in data["answer"].tolist()] == ["bathroom", "hallway", "office"]
    assert data["support"][:, 0].tolist() == [1, 1, 2]  # indices into the padded 3-sentence memory
    assert words[1][1][0] == "daniel" and words[2][2][0] == "sandra"
    assert task.chance == pytest.approx(2 / 3)  # always the most common test answer: 1 of 3 right
    b = task.sample(generator(0), 4, "val")
    assert b.inputs.shape == (4, 32) and torch.equal(b.targets[:, -1], b.meta["answer"])


def test_babi_missing_files_are_a_clear_error_naming_the_path(tmp_path):
    with pytest.raises(ValidationError, match=r"nowhere.*qa2_\*_train\.txt"):
        build("babi", family=2, data_dir=str(tmp_path / "nowhere"))


# -- generalisation groups -----------------------------------------------------------------------------

@pytest.mark.parametrize("name,groups,shape_of", [
    ("babi", {"facts_10": 88, "facts_20": 168, "facts_40": 328}, lambda b: b.inputs.shape[1]),
    ("char_lm", {"ctx_128": 128, "ctx_512": 512}, lambda b: b.inputs.shape[1]),
    ("needle_doc", {"sentences_16": 128, "sentences_64": 512}, lambda b: b.inputs.shape[1]),
    ("cluttered_digits", {"base": 40, "clutter_12": 40, "canvas_56": 56}, lambda b: b.inputs.shape[-1]),
    ("moving_digits", {"frames_8": 8, "frames_16": 16}, lambda b: b.inputs.shape[1]),
])
def test_test_split_groups_are_the_generalisation_conditions_and_score_per_group(name, groups, shape_of):
    task = build(name)
    metric = TASKS.get(name).metric
    assert list(task.eval_groups("test")) == list(groups) and list(task.eval_groups("val")) == ["all"]
    for label, kwargs in task.eval_groups("test").items():
        b = batch_of(task, 0, 4, "test", **kwargs)
        assert shape_of(b) == groups[label]
        logits = torch.zeros(*b.targets.shape, task.output_size)
        assert 0.0 <= task.score(logits, b)[metric] <= (8.001 if metric == "bpc" else 1.0)


def test_cluttered_digits_more_clutter_group_has_more_ink():
    task = build("cluttered_digits")
    ink = {label: float((batch_of(task, 0, 64, "test", **kw).inputs > 0).float().mean())
           for label, kw in task.eval_groups("test").items() if label != "canvas_56"}
    assert ink["clutter_12"] > ink["base"] * 1.3


# -- chance levels ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["seq_digits", "needle_doc", "cluttered_digits", "moving_digits"])
def test_classification_chance_matches_the_best_constant_guess(name):
    task = build(name)
    labels = torch.cat([batch_of(task, i, 128, "test").targets[:, -1] for i in range(6)])
    best_constant = torch.bincount(labels, minlength=task.output_size).max().item() / len(labels)
    assert best_constant == pytest.approx(task.chance, abs=0.05)


def test_char_lm_unigram_logits_score_near_the_declared_chance():
    task = build("char_lm", context=256)
    text = load_text(None)
    counts = torch.bincount(text[slice(*region(text, "train"))].long(), minlength=256).double() + 1
    logits = (counts / counts.sum()).log().float()
    scores = [task.score(logits.expand(64, 256, 256), batch_of(task, i, 64, "test")) for i in range(4)]
    assert sum(s["bpc"] for s in scores) / 4 == pytest.approx(task.chance, abs=0.15)
    assert 3.5 < task.chance < 6  # English-like text: well below the 8 bits of uniform bytes
