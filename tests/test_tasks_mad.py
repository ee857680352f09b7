"""MAD's synthetic tasks (noisy and fuzzy recall, compression, memorization): structure, determinism, splits, chance.

Structural checks parse each batch back from its *inputs* (pairs, motifs,
cues) and re-derive every target and the mask from that parse, so a layout
bug cannot hide behind the generator's own bookkeeping.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from amlab.workloads.registry import TASKS
from amlab.workloads.tasks._partition import in_split
from amlab.workloads.tasks._recall_stream import motif_table
from amlab.workloads.tasks.base import generator

MINE = ["noisy_recall", "fuzzy_recall", "compression", "memorization"]


def make(name, **params):
    entry = TASKS.get(name)
    return entry.build(entry.params(**params))


def sample(task, n=16, split="train", seed=0, step=0, **group):
    return task.sample(generator(seed, split, 0, step), n, split, **group)


def scored(b, i):
    return b.mask[i].nonzero().flatten().tolist()


# -- structure: targets re-derived from the inputs -------------------------------------------------

def parse_pairs(row, keys, values):
    """A recall stream -> [(first step, key motif, value motif)] (noise pairs: key None), left padding skipped.

    Noise pairs are 2 tokens (the noisy task's one-token keys and values).
    """
    kind = lambda t: "pad" if t == 0 else "key" if t <= keys else "value" if t <= keys + values else "noise"  # noqa: E731
    start = next(i for i, t in enumerate(row) if t != 0)
    assert all(t == 0 for t in row[:start])  # padding only on the left
    runs, i = [], start
    while i < len(row):
        j = i
        while j < len(row) and kind(row[j]) == kind(row[i]):
            j += 1
        runs.append((i, kind(row[i]), tuple(row[i:j])))
        i = j
    pairs = []
    while runs:
        (s, k, a), rest = runs[0], runs[1:]
        if k == "noise":  # consecutive noise pairs form one run: split it into 2-token pairs
            pairs += [(s + j, None, a[j : j + 2]) for j in range(0, len(a), 2)]
            runs = rest
        else:
            assert k == "key" and rest[0][1] == "value", "a key run must be followed by a value run"
            pairs.append((s, a, rest[0][2]))
            runs = rest[1:]
    return pairs


def expected(pairs):
    """(scored step -> target) of a parsed stream: every token of a recurring key's value, predicted one step early."""
    seen, want = {}, {}
    for s, key, value in pairs:
        if key is None:
            continue
        if key in seen:
            assert seen[key] == value  # one map per sequence
            want.update({s + len(key) - 1 + i: v for i, v in enumerate(value)})
        seen[key] = value
    return want


@pytest.mark.parametrize("frac", [0.0, 0.5])
def test_noisy_recall_scores_every_recurring_key_on_its_value_and_never_noise(frac):
    t = make("noisy_recall", seq_len=64, frac_noise=frac)
    b = sample(t, 64)
    noise_slots = 0
    for i in range(64):
        row = b.inputs[i].tolist()
        pairs = parse_pairs(row, t.keys, t.values)
        assert [s for s, _, _ in pairs] == list(range(0, 64, 2))  # 2-token slots, no padding
        assert all(len(k) == 1 and len(v) == 1 for _, k, v in pairs if k is not None)
        assert all(len(v) == 2 and min(v) > t.keys + t.values for _, k, v in pairs if k is None)
        assert pairs[-1][1] in {k for _, k, _ in pairs[:-1]}  # the last slot re-shows an earlier key
        want = expected(pairs)
        assert scored(b, i) == sorted(want) and [b.targets[i, s].item() for s in sorted(want)] == [want[s] for s in sorted(want)]
        noise_slots += sum(k is None for _, k, _ in pairs)
    assert noise_slots / (64 * 31) == pytest.approx(frac, abs=0.04)  # the last slot is never noise


@pytest.mark.parametrize("split", ["train", "test"])
def test_fuzzy_recall_scores_the_value_tokens_of_recurring_multi_token_keys(split):
    t = make("fuzzy_recall", vocab_size=8, seq_len=96)  # 4 keys: multi-token keys recur often
    b = sample(t, 64, split)
    lengths = set()
    for i in range(64):
        row = b.inputs[i].tolist()
        pairs = parse_pairs(row, t.keys, t.values)
        for _, k, v in pairs:
            assert 1 <= len(k) <= 3 and 1 <= len(v) <= 3 and len(set(k)) == len(k) and len(set(v)) == len(v)
            lengths.add(len(k))
        assert pairs[-1][1] in {k for _, k, _ in pairs[:-1]}
        want = expected(pairs)
        assert scored(b, i) == sorted(want) and [b.targets[i, s].item() for s in sorted(want)] == [want[s] for s in sorted(want)]
        assert len(row) - pairs[0][0] > 96 - 2 * 6  # pairs fill the sequence up to less than two pairs' room
    assert lengths == ({3} if split == "test" else {1, 2, 3})  # MAD's test prompts with full-length keys only


def test_fuzzy_recall_test_group_is_the_full_key_condition():
    t = make("fuzzy_recall")
    assert t.eval_groups("test") == {"keys_3": {"full_keys": True}} and list(t.eval_groups("val")) == ["all"]


@pytest.mark.parametrize("order", ["shuffled", "sequential"])
def test_compression_asks_for_every_position_once_after_the_compression_token(order):
    t = make("compression", decode_order=order)
    n = t.params.seq_len - 1
    b = sample(t, 32)
    assert b.inputs.shape == (32, 2 * n + 1)
    for i in range(32):
        region, cues = b.inputs[i, :n], b.inputs[i, n + 1 :] - t.first_cue
        assert b.inputs[i, n] == 0 and (region >= t.first_content).all() and (region < t.first_cue).all()
        assert sorted(cues.tolist()) == list(range(n))
        assert cues.tolist() != list(range(n)) if order == "shuffled" else cues.tolist() == list(range(n))
        assert torch.equal(b.targets[i, n + 1 :], region[cues]) and scored(b, i) == list(range(n + 1, 2 * n + 1))


def test_selective_compression_never_asks_for_noise():
    t = make("compression", frac_noise=0.5, noise_vocab=4)
    n = t.params.seq_len - 1
    b = sample(t, 64)
    for i in range(64):
        region, cues = b.inputs[i, :n], (b.inputs[i, n + 1 :] - t.first_cue).tolist()
        content = {j for j in range(n) if region[j] >= t.first_content}
        assert content and scored(b, i) == [n + 1 + d for d, j in enumerate(cues) if j in content]
    share = (b.inputs[:, :n] < t.first_content).float().mean()
    assert share == pytest.approx(0.5, abs=0.05)


def test_memorization_map_is_fixed_by_map_seed_and_shared_by_every_split_and_run_seed():
    t = make("memorization")
    K = t.keys
    assert sorted(t.map.tolist()) == list(range(1 + K, 1 + 2 * K))  # a bijection keys -> values
    assert torch.equal(make("memorization").map, t.map) and not torch.equal(make("memorization", map_seed=1).map, t.map)
    for split, seed in (("train", 0), ("val", 5), ("test", 9)):
        b = sample(t, 16, split, seed)
        assert (b.inputs[:, 1::2] == 0).all() and scored(b, 0) == list(range(1, 32, 2))
        assert torch.equal(b.targets[:, 1::2], t.map[b.inputs[:, 0::2] - 1])  # one map everywhere


def test_memorization_trains_on_a_fixed_set_and_evaluates_on_fresh_sequences():
    t = make("memorization", train_examples=8)
    pool = {tuple(r) for r in t.pool.tolist()}
    train = {tuple(r) for step in range(10) for r in sample(t, 16, "train", step=step).inputs[:, 0::2].tolist()}
    assert train == pool and len(pool) == 8
    assert not {tuple(r) for r in sample(t, 16, "test").inputs[:, 0::2].tolist()} & pool
    fresh = make("memorization", train_examples=0)
    assert fresh.pool is None and len({tuple(r) for r in sample(fresh, 64).inputs.tolist()}) == 64


# -- determinism -----------------------------------------------------------------------------------

def _same(a, b):
    return a.inputs.shape == b.inputs.shape and all(torch.equal(x, y) for x, y in
                                                     ((a.inputs, b.inputs), (a.targets, b.targets), (a.mask, b.mask)))


@pytest.mark.parametrize("name", MINE)
def test_same_seed_same_batch_other_seed_rank_or_step_another(name):
    t = make(name)
    a = t.sample(generator(7, "train", 0, 3), 8, "train")
    assert _same(a, t.sample(generator(7, "train", 0, 3), 8, "train"))
    assert _same(a, make(name).sample(generator(7, "train", 0, 3), 8, "train"))  # a rebuilt task (another worker)
    for other in ((8, "train", 0, 3), (7, "train", 1, 3), (7, "train", 0, 4)):
        assert not _same(a, t.sample(generator(*other), 8, "train"))


# -- masks and scores ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MINE)
def test_mask_covers_exactly_the_scored_positions(name):
    t = make(name)
    for split in ("train", "val", "test"):
        for group in t.eval_groups(split).values():
            b = sample(t, 8, split, **group)
            assert b.targets.shape == b.mask.shape == b.inputs.shape and b.mask.any(1).all()
            assert b.targets.min() >= 0 and b.targets.max() < t.output_size and b.inputs.max() < t.input_size
            assert (b.targets[~b.mask] == 0).all()
            logits = F.one_hot(b.targets, t.output_size).float() * 10
            best = t.score(logits, b)
            assert best["accuracy"] == 1.0
            noisy = logits.clone()
            noisy[~b.mask] = torch.randn_like(noisy[~b.mask]) * 10  # unscored positions do not count
            assert t.score(noisy, b) == best
            wrong = logits.clone()
            s = b.mask.nonzero()[0]
            wrong[s[0], s[1]] = wrong[s[0], s[1]].roll(1)
            assert t.score(wrong, b)["accuracy"] < 1.0


def _random_among(b, first, count, size):
    """Logits that pick a uniformly random token of [first, first+count) at every step."""
    scores = torch.rand(*b.targets.shape, size)
    allowed = torch.zeros(size, dtype=torch.bool)
    allowed[first : first + count] = True
    return scores.masked_fill(~allowed, -1.0)


@pytest.mark.parametrize(("name", "first", "n"), [
    ("noisy_recall", lambda t: 1 + t.keys, 400),
    ("fuzzy_recall", lambda t: 1 + t.keys, 1000),
    ("compression", lambda t: t.first_content, 400),
    ("memorization", lambda t: 1 + t.keys, 400),
])
def test_random_guess_among_the_answer_tokens_scores_chance(name, first, n):
    t = make(name)
    count = round(1 / t.chance)
    groups = t.eval_groups("test")
    got = sum(t.score(_random_among(b, first(t), count, t.output_size), b)["accuracy"]
              for b in (sample(t, n, "test", **kw) for kw in groups.values())) / len(groups)
    assert got == pytest.approx(t.chance, abs=0.02 if name == "fuzzy_recall" else 0.01)


# -- disjoint splits -------------------------------------------------------------------------------

def _drawn(task, split, batches, n=256):
    return [tuple(r) for step in range(batches) for r in sample(task, n, split, step=step).inputs.tolist()]


def test_no_test_or_val_sequence_to_compress_occurs_in_training():
    """A 1024-sequence space sampled until nearly exhausted: without the partition the splits would overlap."""
    t = make("compression", vocab_size=2, seq_len=11)
    train, val, test = ({r[:10] for r in _drawn(t, s, k)} for s, k in (("train", 40), ("val", 12), ("test", 12)))
    assert len(train | val | test) > 0.95 * 1024
    assert not train & test and not train & val and not val & test
    assert 0.05 < len(test) / 1024 < 0.15 and 0.05 < len(val) / 1024 < 0.15


@pytest.mark.parametrize(("name", "params"), [
    ("noisy_recall", {"vocab_size": 4, "seq_len": 22, "frac_noise": 0.0}),
    ("fuzzy_recall", {"vocab_size": 4, "seq_len": 22, "key_len": 1, "value_len": 1}),
])
def test_no_test_or_val_recall_sequence_occurs_in_training(name, params):
    """Spaces small enough that training repeats its own sequences, so unpartitioned splits would share some."""
    t = make(name, **params)
    drawn = {s: _drawn(t, s, k) for s, k in (("train", 40), ("val", 8), ("test", 8))}
    train, val, test = (set(drawn[s]) for s in ("train", "val", "test"))
    assert len(train) < 0.8 * len(drawn["train"])  # training repeats itself: the space is small
    assert test and val and not train & test and not train & val and not val & test


def test_every_recall_example_lies_in_its_splits_part_by_an_identity_read_off_its_inputs():
    """The partition is a function of the example: rebuild each identity row from the tokens alone and hash it."""
    noisy, fuzzy = make("noisy_recall"), make("fuzzy_recall", vocab_size=8, seq_len=48)
    K, V = (motif_table(n, 3, first) for n, first in ((fuzzy.keys, 1), (fuzzy.values, 1 + fuzzy.keys)))
    number = [{tuple(m.tokens[: m.length[j], j].tolist()): j for j in range(len(m.length) - 1)} for m in (K, V)]
    for split in ("train", "val", "test"):
        b = sample(noisy, 64, split)
        assert in_split(torch.cat([b.inputs, b.targets, b.mask.long()], 1), split).all()
        rows = []
        for tokens in sample(fuzzy, 64, split).inputs.tolist():
            row, seen = [], set()
            for _, key, value in parse_pairs(tokens, fuzzy.keys, fuzzy.values):
                row += [number[0][key] + 1, number[1][value] + 1, key in seen]
                seen.add(key)
            rows.append(row + [0] * (3 * 48 - len(row)))  # trailing zeros do not change the hash
        assert in_split(torch.tensor(rows), split).all()


@pytest.mark.parametrize(("name", "params"), [
    ("noisy_recall", {"vocab_size": 4, "seq_len": 16}),
    ("fuzzy_recall", {"vocab_size": 4, "seq_len": 8, "key_len": 1, "value_len": 1}),
    ("compression", {"vocab_size": 2, "seq_len": 8}),
])
def test_spaces_too_small_to_partition_are_rejected(name, params):
    with pytest.raises(ValueError, match="distinct contexts"):
        make(name, **params)


@pytest.mark.parametrize(("name", "params", "match"), [
    ("noisy_recall", {"seq_len": 127}, "even"),
    ("memorization", {"seq_len": 31}, "even"),
    ("fuzzy_recall", {"vocab_size": 4, "key_len": 3}, "distinct"),
    ("fuzzy_recall", {"seq_len": 8}, "seq_len"),
    ("compression", {"frac_noise": 0.2}, "noise_vocab"),
])
def test_inconsistent_knobs_are_rejected(name, params, match):
    with pytest.raises(ValueError, match=match):
        make(name, **params)


# -- the platform's model trains on them -----------------------------------------------------------

@pytest.mark.parametrize("name", MINE)
def test_an_lstm_cell_takes_a_training_step(name):
    from amlab.workloads.model import build_model, compute_loss
    from amlab.workloads.registry import MECHANISMS

    t = make(name)
    model = build_model("lstm", MECHANISMS.get("lstm").params(d_model=8), t, name)
    b = sample(t, 4)
    logits, _ = model(b.inputs)
    loss, _ = compute_loss(TASKS.get(name).loss, logits, b)
    loss.backward()
    assert logits.shape == (*b.inputs.shape, t.output_size) and torch.isfinite(loss)
