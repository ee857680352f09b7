"""Algorithmic tasks: each generator builds what its paper describes, deterministically, scored where it says.

Structural checks re-derive every target from the *inputs* (not from the
generator's internals), so a layout bug cannot hide behind its own bookkeeping.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from amlab.workloads.registry import TASKS
from amlab.workloads.tasks._partition import check_space, identity_hash, in_split
from amlab.workloads.tasks.base import generator

MINE = ["copy", "repeat_copy", "associative_recall", "priority_sort", "adding", "assoc_retrieval", "selective_copy", "mqar"]


def make(name, **params):
    entry = TASKS.get(name)
    return entry.build(entry.params(**params))


def sample(task, n=16, split="train", seed=0, **group):
    return task.sample(generator(seed, split, 0, 0), n, split, **group)


# -- structure: targets re-derived from the inputs -------------------------------------------------

def test_copy_target_is_the_input():
    t = make("copy", max_len=6)
    b = sample(t, 32)
    for i, L in enumerate(b.meta["lengths"].tolist()):
        assert b.inputs[i, L, t.params.width] == 1  # delimiter
        assert torch.equal(b.targets[i, L + 1 : 2 * L + 1], b.inputs[i, :L, : t.params.width])
        assert b.mask[i].nonzero().flatten().tolist() == list(range(L + 1, 2 * L + 1))


def test_repeat_copy_target_is_the_input_repeated_count_times_then_an_end_marker():
    t = make("repeat_copy", max_len=5, max_repeats=4)
    w = t.params.width
    b = sample(t, 32)
    assert set(b.meta["repeats"].tolist()) == {1, 2, 3, 4}
    for i in range(32):
        L = int(b.inputs[i, :, w].nonzero())  # the delimiter's step
        R = round(float(b.inputs[i, L + 1, w + 1]) * t.count_std + t.count_mean)  # decode the normalised count
        assert R == b.meta["repeats"][i]
        out = b.targets[i, L + 2 : L + 2 + L * R]
        assert torch.equal(out[:, :w], b.inputs[i, :L, :w].repeat(R, 1))
        assert out[:, w].sum() == 0 and b.targets[i, L + 2 + L * R, w] == 1  # end marker after the last copy only
        assert b.mask[i].nonzero().flatten().tolist() == list(range(L + 2, L + 3 + L * R))


def test_repeat_copy_count_is_normalised_to_zero_mean_unit_variance_over_training_counts():
    t = make("repeat_copy")
    counts = torch.arange(1, 11).float()
    z = (counts - t.count_mean) / t.count_std
    assert z.mean().abs() < 1e-6 and (z.var(unbiased=False) - 1).abs() < 1e-6


def test_associative_recall_answer_is_the_item_after_the_query():
    t = make("associative_recall")
    w, k = t.params.width, t.params.item_len
    b = sample(t, 32)
    for i in range(32):
        starts = b.inputs[i, :, w].nonzero().flatten().tolist()
        items = [b.inputs[i, s + 1 : s + 1 + k, :w] for s in starts]
        q0, q1 = b.inputs[i, :, w + 1].nonzero().flatten().tolist()
        assert q1 == q0 + k + 1 and len(items) == b.meta["items"][i]
        query = b.inputs[i, q0 + 1 : q1, :w]
        hits = [j for j, item in enumerate(items) if torch.equal(item, query)]
        assert len(hits) == 1 and hits[0] < len(items) - 1  # unique, and it has a successor
        assert torch.equal(b.targets[i, q1 + 1 : q1 + 1 + k], items[hits[0] + 1])
        assert b.mask[i].nonzero().flatten().tolist() == list(range(q1 + 1, q1 + 1 + k))


def test_associative_recall_items_are_distinct_even_when_collisions_are_likely():
    t = make("associative_recall", width=2, item_len=3, max_items=12, test_items=(12,))  # 64 possible items
    b = sample(t, 64, "test", items=12)
    items = b.inputs[:, :12 * 4].view(64, 12, 4, -1)[:, :, 1:, :2].flatten(2)
    same = (items[:, :, None] == items[:, None]).all(-1).sum((1, 2))
    assert (same == 12).all()  # only each item with itself


def test_priority_sort_targets_are_the_top_k_sorted_by_priority():
    t = make("priority_sort")
    w, n, k = t.params.width, t.params.n_in, t.params.n_out
    b = sample(t, 16)
    for i in range(16):
        prio = b.inputs[i, :n, w].tolist()
        assert all(-1 <= p <= 1 for p in prio)
        order = sorted(range(n), key=lambda j: -prio[j])[:k]
        assert torch.equal(b.targets[i, n + 1 :], b.inputs[i, order, :w])
        assert b.inputs[i, n, w + 1] == 1 and b.mask[i].nonzero().flatten().tolist() == list(range(n + 1, n + 1 + k))


def test_adding_target_is_the_sum_of_the_two_marked_values():
    t = make("adding", seq_len=50)
    b = sample(t, 64)
    values, markers = b.inputs[..., 0], b.inputs[..., 1]
    assert (markers.sum(1) == 2).all()
    assert (markers[:, :25].sum(1) == 1).all() and (markers[:, 25:].sum(1) == 1).all()  # one per half
    assert torch.allclose(b.targets[:, -1, 0], (values * markers).sum(1))
    assert b.mask[:, -1].all() and b.mask.sum() == 64


def test_assoc_retrieval_answer_is_the_digit_paired_with_the_query():
    t = make("assoc_retrieval", pairs=5, vocab=26)
    V = t.params.vocab
    b = sample(t, 64)
    for row, target in zip(b.inputs.tolist(), b.targets[:, -1].tolist(), strict=True):
        keys, digits = row[0:10:2], row[1:10:2]
        assert len(set(keys)) == 5 and all(k < V for k in keys) and all(V <= d < V + 10 for d in digits)
        assert row[10:12] == [V + 10, V + 10]  # "??"
        assert target == digits[keys.index(row[12])]
    assert b.mask[:, -1].all() and b.mask.sum() == 64


@pytest.mark.parametrize("noise", [0, 3])
def test_selective_copy_targets_are_the_non_filler_tokens_in_order(noise):
    t = make("selective_copy", seq_len=40, tokens=6, noise_vocab=noise, test_lens=(40,))
    b = sample(t, 32)
    for i in range(32):
        region = b.inputs[i, :40]
        content = region[region >= t.first_content]
        assert len(content) == 6 and torch.equal(b.targets[i, 40:], content)
        filler = region[region < t.first_content]
        assert ((filler >= 2) if noise else (filler == 0)).all()
        assert (b.inputs[i, 40:] == 1).all() and b.mask[i].nonzero().flatten().tolist() == list(range(40, 46))


def test_mqar_answers_match_the_keys_values():
    t = make("mqar")
    kv = t.params.num_kv_pairs
    b = sample(t, 32)
    for i in range(32):
        pairs = dict(zip(b.inputs[i, 0 : 2 * kv : 2].tolist(), b.inputs[i, 1 : 2 * kv : 2].tolist(), strict=True))
        qs = b.mask[i].nonzero().flatten()
        assert len(qs) == kv and (qs >= 2 * kv).all()
        assert sorted(b.inputs[i, qs].tolist()) == sorted(pairs)  # every key queried once
        assert [pairs[k] for k in b.inputs[i, qs].tolist()] == b.targets[i, qs].tolist()


# -- determinism -----------------------------------------------------------------------------------

def _same(a, b):
    return a.inputs.shape == b.inputs.shape and all(torch.equal(x, y) for x, y in
                                                     ((a.inputs, b.inputs), (a.targets, b.targets), (a.mask, b.mask)))


@pytest.mark.parametrize("name", MINE)
def test_same_seed_same_batch_other_rank_or_step_another(name):
    t = make(name)
    a = t.sample(generator(7, "train", 0, 3), 8, "train")
    assert _same(a, t.sample(generator(7, "train", 0, 3), 8, "train"))
    assert not _same(a, t.sample(generator(7, "train", 1, 3), 8, "train"))
    assert not _same(a, t.sample(generator(7, "train", 0, 4), 8, "train"))


# -- masks and scores ------------------------------------------------------------------------------

def perfect_logits(loss, task, b):
    if loss == "ce":
        return F.one_hot(b.targets, task.output_size).float() * 10
    if loss == "bce":
        return (b.targets * 2 - 1) * 10
    return b.targets.clone()


PERFECT = {"bit_errors": 0.0, "seq_accuracy": 1.0, "accuracy": 1.0, "mse": 0.0, "error": 0.0}


@pytest.mark.parametrize("name", MINE)
def test_mask_covers_exactly_the_scored_positions(name):
    entry, t = TASKS.get(name), make(name)
    b = sample(t, 8)
    assert b.targets.shape[:2] == b.mask.shape and b.mask.any(1).all()
    if entry.loss == "ce":
        assert b.targets.min() >= 0 and b.targets.max() < t.output_size and b.inputs.max() < t.input_size
    else:
        assert b.targets.shape[-1] == t.output_size and b.inputs.shape[-1] == t.input_size
    assert (b.targets[~b.mask] == 0).all()  # in range and 0 where unscored
    logits = perfect_logits(entry.loss, t, b)
    best = t.score(logits, b)
    assert best[entry.metric] == PERFECT[entry.metric]
    noisy = logits.clone()
    noisy[~b.mask] = torch.randn_like(noisy[~b.mask]) * 10  # unscored positions do not count
    assert t.score(noisy, b) == best
    pos = b.mask.nonzero()[0]  # one scored position wrong: the metric notices
    wrong = logits.clone()
    if entry.loss == "ce":
        wrong[pos[0], pos[1]] = wrong[pos[0], pos[1]].roll(1)
    elif entry.loss == "bce":
        wrong[pos[0], pos[1]] = -wrong[pos[0], pos[1]]
    else:
        wrong[pos[0], pos[1]] += 1
    assert t.score(wrong, b)[entry.metric] != best[entry.metric]


def _on_test_groups(name, task, guess, n=256):
    """The primary metric of `guess(batch) -> logits` averaged over the test groups, as the report does."""
    groups, metric = task.eval_groups("test"), TASKS.get(name).metric
    vals = [task.score(guess(b), b)[metric] for b in (sample(task, n, "test", **kw) for kw in groups.values())]
    return sum(vals) / len(vals)


@pytest.mark.parametrize("name", ["copy", "repeat_copy", "associative_recall", "priority_sort"])
def test_random_bits_score_chance(name):
    t = make(name)
    got = _on_test_groups(name, t, lambda b: torch.randn(b.targets.shape), n=64)
    assert got == pytest.approx(t.chance, rel=0.05)


def test_adding_constant_mean_predictor_scores_chance():
    t = make("adding")
    assert t.chance == pytest.approx(0.1667, abs=1e-4)
    assert _on_test_groups("adding", t, lambda b: torch.ones(b.targets.shape), n=4000) == pytest.approx(t.chance, abs=0.01)


def _random_among(b, classes: torch.Tensor, size: int) -> torch.Tensor:
    """Logits that pick a uniformly random class among `classes` ((B, C) bool, per example) at every step."""
    scores = torch.rand(*b.targets.shape, size)
    return scores.masked_fill(~classes[:, None, :], -1.0)


def test_assoc_retrieval_random_digit_scores_chance():
    t = make("assoc_retrieval")
    digits = torch.zeros(t.output_size, dtype=torch.bool)
    digits[t.params.vocab : t.params.vocab + 10] = True
    got = _on_test_groups("assoc_retrieval", t, lambda b: _random_among(b, digits.expand(len(b), -1), t.output_size), n=4000)
    assert t.chance == 0.9 and got == pytest.approx(0.9, abs=0.02)


def test_selective_copy_random_token_scores_chance():
    t = make("selective_copy")
    content = torch.arange(t.output_size) >= t.first_content
    got = _on_test_groups("selective_copy", t, lambda b: _random_among(b, content.expand(len(b), -1), t.output_size), n=256)
    assert got == pytest.approx(t.chance, abs=0.01)


def test_mqar_guessing_among_shown_values_scores_chance():
    t = make("mqar")
    shown = lambda b: F.one_hot(b.meta["values"], t.output_size).bool().any(1)  # noqa: E731
    got = _on_test_groups("mqar", t, lambda b: _random_among(b, shown(b), t.output_size), n=2000)
    assert got == pytest.approx(t.chance, abs=0.01)


# -- disjoint splits -------------------------------------------------------------------------------

def _contexts(task, split, batches, n=256):
    """The distinct key-value prefixes of `batches` batches of a split."""
    kv = getattr(task.params, "pairs", None) or task.params.num_kv_pairs
    return {tuple(row) for step in range(batches)
            for row in task.sample(generator(0, split, 0, step), n, split).inputs[:, : 2 * kv].tolist()}


@pytest.mark.parametrize(("name", "params", "space"), [
    ("assoc_retrieval", {"pairs": 2, "vocab": 6}, 6 * 5 * 10 * 10),
    ("mqar", {"vocab_size": 16, "seq_len": 8, "num_kv_pairs": 2}, 7 * 6 * 8 * 8),
])
def test_no_test_or_val_context_occurs_in_training(name, params, space):
    """A small example space, sampled until nearly exhausted: without the partition the splits would overlap."""
    t = make(name, **params)
    train, val, test = (_contexts(t, s, k) for s, k in (("train", 40), ("val", 12), ("test", 12)))
    assert len(train | val | test) > 0.95 * space  # nearly every context was drawn by some split...
    assert not train & test and not train & val and not val & test  # ...and none by two
    assert 0.05 < len(test) / space < 0.15 and 0.05 < len(val) / space < 0.15


def test_partition_is_a_fixed_function_of_the_example():
    rows = torch.randint(0, 50, (20000, 6))
    assert torch.equal(identity_hash(rows), identity_hash(rows.clone()))
    assert not torch.equal(identity_hash(rows), identity_hash(rows.flip(1)))  # order matters
    parts = {s: in_split(rows, s) for s in ("train", "val", "test")}
    assert (parts["train"].int() + parts["val"].int() + parts["test"].int() == 1).all()  # exactly one part each
    for split, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert parts[split].float().mean() == pytest.approx(share, abs=0.01)
    with pytest.raises(ValueError, match="unknown split"):
        in_split(rows, "dev")


def test_spaces_too_small_to_partition_are_rejected():
    with pytest.raises(ValueError, match="distinct contexts"):
        check_space(56, "one pair")
    with pytest.raises(ValueError, match="distinct contexts"):
        make("mqar", vocab_size=16, seq_len=8, num_kv_pairs=1)
    with pytest.raises(ValueError, match="distinct contexts"):
        make("assoc_retrieval", pairs=1, vocab=26)


# -- generalisation groups -------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "params", "key", "expect"), [
    ("repeat_copy", {}, "repeats", {"len_10_rep_10": 10, "len_10_rep_20": 20, "len_20_rep_10": 10, "len_20_rep_20": 20}),
    ("associative_recall", {}, "items", {"items_6": 6, "items_12": 12}),
    ("adding", {}, None, {"len_100": 100, "len_200": 200, "len_400": 400}),
    ("selective_copy", {}, None, {"len_256": 272, "len_512": 528}),
    ("priority_sort", {}, None, {"in_20_out_16": 16, "in_40_out_32": 32}),
    ("assoc_retrieval", {"test_pairs": (12,)}, None, {"pairs_8": 19, "pairs_12": 27}),
])
def test_test_groups_sample_their_condition(name, params, key, expect):
    t = make(name, **params)
    groups = t.eval_groups("test")
    assert set(groups) == set(expect) and list(t.eval_groups("val")) == ["all"]
    for label, kw in groups.items():
        b = sample(t, 4, "test", **kw)
        if key is not None:
            assert (b.meta[key] == expect[label]).all()
        elif name == "priority_sort":
            assert (b.mask.sum(1) == expect[label]).all()
        else:
            assert b.inputs.shape[1] == expect[label]


def test_evaluate_reports_each_generalisation_group():
    from amlab.platform.spec import RunSpec
    from amlab.platform.train import evaluate
    from amlab.workloads.model import build_model

    spec = RunSpec.model_validate({"mechanism": {"name": "lstm", "d_model": 8},
                                   "task": {"name": "associative_recall", "test_items": [3, 5]},
                                   "train": {"batch_size": 4, "eval_batches": 1}})
    t = TASKS.get("associative_recall").build(spec.task_params())
    model = build_model("lstm", spec.mechanism_params(), t, "associative_recall")
    got = evaluate(model, t, spec, "test", torch.device("cpu"))
    for metric in ("bit_errors", "seq_accuracy", "bit_accuracy"):
        assert {f"test/{metric}", f"test/{metric}/items_3", f"test/{metric}/items_5"} <= set(got)
        assert got[f"test/{metric}"] == pytest.approx((got[f"test/{metric}/items_3"] + got[f"test/{metric}/items_5"]) / 2)
