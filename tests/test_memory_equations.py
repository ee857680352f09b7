"""Memory-augmented mechanisms against hand-computed cases: NTM addressing and writes, DNC allocation and
links, MemN2N sentence memories (position and temporal encodings) and hops, Q-MANN quantisation."""

from __future__ import annotations

import math

import pytest
import torch

from amlab.workloads.mechanisms.dnc import DNC, DNCParams, allocation, update_link, update_precedence, update_usage
from amlab.workloads.mechanisms.memn2n import MemN2N, MemN2NParams, hop, position_encoding, sentence_bags, sentence_layout
from amlab.workloads.mechanisms.ntm import (
    NTM,
    NTMParams,
    content_weights,
    erase_add,
    interpolate,
    sharpen,
    shift,
)
from amlab.workloads.mechanisms.qmann import hamming_similarity, quantize


def t(*rows):
    """t(1, 2) and t([1, 2]) are vectors; t([1, 2], [3, 4]) is a matrix."""
    return torch.tensor(rows[0] if len(rows) == 1 else rows, dtype=torch.float32)


# -- NTM addressing -----------------------------------------------------------------------------

def test_content_weights_are_softmax_of_beta_times_cosine():
    memory = t([1.0, 0.0], [0.0, 1.0], [1.0, 1.0])[None]  # (1, 3, 2)
    key = t([2.0, 0.0])[None]  # (1, 1, 2): cosines 1, 0, 1/sqrt 2
    w = content_weights(memory, key, torch.tensor([[2.0]]))
    e = [math.exp(2.0), 1.0, math.exp(2.0 / math.sqrt(2))]
    torch.testing.assert_close(w[0, 0], torch.tensor(e) / sum(e), atol=1e-5, rtol=0)


def test_content_weights_on_an_empty_memory_are_uniform_with_finite_gradients():
    memory = torch.zeros(1, 4, 3, requires_grad=True)
    key = torch.randn(1, 2, 3, requires_grad=True)
    w = content_weights(memory, key, torch.tensor([[5.0, 5.0]]))
    torch.testing.assert_close(w, torch.full((1, 2, 4), 0.25))
    (w * torch.arange(4.0)).sum().backward()
    assert torch.isfinite(memory.grad).all() and torch.isfinite(key.grad).all()


def test_interpolation_mixes_content_and_previous_weighting():
    w = interpolate(t([1.0, 0.0, 0.0]), t([0.0, 0.0, 1.0]), torch.tensor(0.25))
    torch.testing.assert_close(w, t([0.25, 0.0, 0.75]))


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        ([0.0, 0.0, 1.0], [0.4, 0.1, 0.2, 0.3]),  # move by +1: slot i takes w(i - 1)
        ([1.0, 0.0, 0.0], [0.2, 0.3, 0.4, 0.1]),  # move by -1
        ([0.0, 1.0, 0.0], [0.1, 0.2, 0.3, 0.4]),  # stay
        ([0.5, 0.0, 0.5], [0.3, 0.2, 0.3, 0.2]),  # half each way: (w(i+1) + w(i-1)) / 2
    ],
)
def test_circular_shift(s, expected):
    w = shift(t([0.1, 0.2, 0.3, 0.4]), torch.tensor(s))
    torch.testing.assert_close(w, torch.tensor(expected))


def test_shift_is_vectorised_over_batch_and_heads():
    w = torch.softmax(torch.randn(2, 3, 5), -1)
    s = torch.softmax(torch.randn(2, 3, 3), -1)
    out = shift(w, s)
    for b in range(2):
        for h in range(3):
            torch.testing.assert_close(out[b, h], shift(w[b, h], s[b, h]))


def test_sharpen_raises_to_gamma_and_renormalises():
    w = sharpen(t([0.2, 0.3, 0.5]), torch.tensor(2.0))
    torch.testing.assert_close(w, t([0.04, 0.09, 0.25]) / 0.38)


def test_sharpen_survives_zeros_and_huge_gamma():
    w = sharpen(t([0.0, 0.3, 0.7]), torch.tensor(200.0))
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w, t([0.0, 0.0, 1.0]))


def test_erase_then_add_write_one_head():
    memory = t([1.0, 2.0], [3.0, 4.0])[None]
    w, erase, add = t([0.25, 0.75])[None, None], t([1.0, 0.0])[None, None], t([2.0, -1.0])[None, None]
    torch.testing.assert_close(erase_add(memory, w, erase, add)[0], t([1.25, 1.75], [2.25, 3.25]))


def test_erase_then_add_two_heads_erase_before_adding_in_any_order():
    memory = t([1.0, 2.0], [3.0, 4.0])[None]
    w = t([0.25, 0.75], [1.0, 0.0])[None]
    erase = t([1.0, 0.0], [0.0, 1.0])[None]
    add = t([2.0, -1.0], [0.0, 1.0])[None]
    # keep = (1 - w1 e1)(1 - w2 e2); add = w1 a1 + w2 a2
    expected = t([1.25, 0.75], [2.25, 3.25])
    torch.testing.assert_close(erase_add(memory, w, erase, add)[0], expected)
    torch.testing.assert_close(erase_add(memory, w.flip(1), erase.flip(1), add.flip(1))[0], expected)


def test_ntm_location_addressing_walks_one_slot_per_step():
    """Interface biases that say "ignore content, shift by +1, sharpen hard": the heads step through the slots."""
    core = NTM(NTMParams(d_model=8, slots=6, width=4))
    M, S = 4, 3
    with torch.no_grad():
        core.interface.weight.zero_()
        bias = torch.zeros(core.addr_size)
        bias[M + 1] = -30.0  # interpolation gate: keep the previous weighting
        bias[M + 2] = 30.0  # gamma: sharpen
        bias[M + 3 : M + 3 + S] = torch.tensor([-30.0, -30.0, 30.0])  # shift by +1
        core.interface.bias.copy_(torch.cat([bias, bias, torch.zeros(2 * M)]))
    core.record = True
    core(torch.randn(2, 5, 8))
    tr = core.introspect()
    for key in ("read_weights", "write_weights"):
        torch.testing.assert_close(tr[key][:, 0].argmax(-1), torch.tensor([[1, 2, 3, 4, 5]] * 2))
        assert (tr[key].max(-1).values > 0.99).all()


# -- DNC ----------------------------------------------------------------------------------------

def test_allocation_favours_the_least_used_slot():
    # sorted usage 0.2 (slot 1), 0.5 (slot 0), 0.9 (slot 2): a = 0.8, 0.5*0.2, 0.1*0.2*0.5
    a = allocation(t([0.5, 0.2, 0.9]))
    torch.testing.assert_close(a, t([0.1, 0.8, 0.01]), atol=1e-5, rtol=0)


def test_allocation_on_a_full_memory_is_near_zero_and_on_an_empty_one_picks_slot_zero():
    assert allocation(torch.ones(4)).sum() < 1e-5
    torch.testing.assert_close(allocation(torch.zeros(3)), t([1.0, 0.0, 0.0]), atol=1e-5, rtol=0)


def test_usage_grows_with_writes_and_is_freed_by_read_free_gates():
    u = update_usage(t([0.5, 0.2, 0.9])[None], t([0.5, 0.0, 0.0])[None], t([0.0, 0.0, 1.0])[None, None], t([1.0])[None])
    torch.testing.assert_close(u[0], t([0.75, 0.2, 0.0]))


def test_precedence_update():
    p = update_precedence(t([0.2, 0.3, 0.0]), t([0.0, 0.0, 0.5]))
    torch.testing.assert_close(p, t([0.1, 0.15, 0.5]))


def test_link_records_write_order_and_reads_follow_it():
    N = 3
    link, prec = torch.zeros(1, N, N), torch.zeros(1, N)
    for slot in (0, 1):  # write slot 0, then slot 1
        w = torch.nn.functional.one_hot(torch.tensor([slot]), N).float()
        link = update_link(link, prec, w)
        prec = update_precedence(prec, w)
    expected = torch.zeros(N, N)
    expected[1, 0] = 1.0  # L[i, j]: slot i was written right after slot j
    torch.testing.assert_close(link[0], expected)
    torch.testing.assert_close(prec[0], t([0.0, 1.0, 0.0]))
    # forward from slot 0 reaches slot 1 (L w); backward from slot 1 reaches slot 0 (L^T w)
    torch.testing.assert_close(link[0] @ t([1.0, 0.0, 0.0]), t([0.0, 1.0, 0.0]))
    torch.testing.assert_close(link[0].T @ t([0.0, 1.0, 0.0]), t([1.0, 0.0, 0.0]))


def test_link_decays_with_partial_writes_and_keeps_a_zero_diagonal():
    link = torch.full((3, 3), 0.5)
    new = update_link(link, t([0.2, 0.0, 0.0]), t([0.0, 0.5, 0.5]))
    # (1 - w_i - w_j) L_ij + w_i p_j, e.g. L[1, 0] = (1 - 0.5 - 0) 0.5 + 0.5 * 0.2
    torch.testing.assert_close(new[1, 0], torch.tensor(0.35))
    torch.testing.assert_close(new[0, 1], torch.tensor(0.25))
    torch.testing.assert_close(new[1, 2], torch.tensor(0.0))
    assert (new.diagonal() == 0).all()


def test_dnc_allocation_only_writes_fill_a_fresh_slot_each_step_and_link_them_in_order():
    """Allocation gate and write gate open, free gates shut: every step writes a slot unused so far."""
    core = DNC(DNCParams(d_model=8, slots=6, width=4, read_heads=1))
    R, W = 1, 4
    with torch.no_grad():
        core.interface.weight.zero_()
        bias = torch.zeros(sum(core.split))
        free_at = R * W + R + W + 1 + W + W
        bias[free_at : free_at + R] = -30.0  # free gates
        bias[free_at + R : free_at + R + 2] = 30.0  # allocation gate, write gate
        core.interface.bias.copy_(bias)
    core.record = True
    core(torch.randn(2, 5, 8))
    tr = core.introspect()
    ww = tr["write_weights"][:, 0]  # (B, T, N)
    assert (ww.max(-1).values > 0.99).all()
    slots = ww.argmax(-1)  # (B, T)
    assert slots[:, 0].eq(0).all()  # an empty memory allocates slot 0 first
    for b in range(2):
        assert len(set(slots[b].tolist())) == 5  # never the same slot twice
        usage_before = tr["usage"][b, torch.arange(5), slots[b]]  # usage at step t counts writes of steps < t
        assert (usage_before < 1e-3).all()
        for prev, nxt in zip(slots[b, :-1].tolist(), slots[b, 1:].tolist(), strict=True):
            assert tr["link"][b, nxt, prev] > 0.99  # L[i, j]: i written right after j


# -- MemN2N -------------------------------------------------------------------------------------

def test_hop_attends_over_the_causal_prefix():
    u = t([1.0, 0.0], [0.0, 1.0])[None]
    m_in, m_out = t([1.0, 0.0], [0.0, 2.0])[None], t([1.0, 1.0], [2.0, -1.0])[None]
    mask = torch.ones(2, 2, dtype=torch.bool).tril()
    o, p = hop(u, m_in, m_out, mask)
    p1 = math.exp(2) / (1 + math.exp(2))  # query 1 scores (0, 2)
    torch.testing.assert_close(p[0], t([1.0, 0.0], [1 - p1, p1]))
    torch.testing.assert_close(o[0], t([1.0, 1.0], [(1 - p1) + 2 * p1, (1 - p1) - p1]))


def test_hop_adds_temporal_encodings_by_age():
    u = t([1.0, 0.0], [1.0, 1.0])[None]
    m_in, m_out = t([1.0, 0.0], [0.0, 2.0])[None], t([1.0, 1.0], [2.0, -1.0])[None]
    mask = torch.ones(2, 2, dtype=torch.bool).tril()
    ages = torch.tensor([[0, 0], [1, 0]])
    t_in, t_out = t([0.0, 0.0], [1.0, 0.0]), t([0.0, 0.0], [0.0, 3.0])
    o, p = hop(u, m_in, m_out, mask, ages, t_in, t_out)
    # query 1: slot 0 (age 1) scores (1,1).((1,0)+(1,0)) = 2, slot 1 (age 0) scores (1,1).(0,2) = 2
    torch.testing.assert_close(p[0, 1], t([0.5, 0.5]))
    torch.testing.assert_close(o[0, 1], 0.5 * (t([1.0, 1.0]) + t([0.0, 3.0])) + 0.5 * t([2.0, -1.0]))


def test_memn2n_token_variant_two_hops_by_hand():
    """The token-level variant (every earlier position a memory); identity embeddings, layer-wise tying with
    H = I: u^{k+1} = u^k + o^k, y = u^3."""
    d = 8
    core = MemN2N(MemN2NParams(d_model=d, hops=2, tying="layerwise", position="none", memory="token"))
    with torch.no_grad():
        for lin in [*core.embed, core.H, core.out]:
            lin.weight.copy_(torch.eye(d))
        core.out.bias.zero_()
    e0, e1 = torch.eye(d)[0], torch.eye(d)[1]
    y, _ = core(torch.stack([e0, e1])[None])
    torch.testing.assert_close(y[0, 0], 3 * e0)  # step 0 only sees itself: o = x0 at both hops
    p0 = 1 / (1 + math.e)  # step 1, hop 1: scores (x0.x1, x1.x1) = (0, 1)
    u2 = p0 * e0 + (2 - p0) * e1
    q = torch.softmax(torch.tensor([p0, 2 - p0]), 0)  # hop 2 scores (u2.x0, u2.x1)
    torch.testing.assert_close(y[0, 1], u2 + q[0] * e0 + q[1] * e1)


@pytest.mark.parametrize("tying", ["adjacent", "layerwise", "none"])
def test_memn2n_tying_sets_the_number_of_embeddings(tying):
    core = MemN2N(MemN2NParams(d_model=8, hops=3, tying=tying))
    assert len(core.embed) == {"adjacent": 4, "layerwise": 3, "none": 7}[tying]
    assert core.temporal.shape[0] == {"adjacent": 4, "layerwise": 2, "none": 6}[tying]


def test_position_encoding_by_hand():
    """l_kj = (1 - j/J) - (k/d)(1 - 2j/J) for J = 4 words, d = 2 dims (j, k from 1)."""
    torch.testing.assert_close(position_encoding(4, 2), t([0.5, 0.25], [0.5, 0.5], [0.5, 0.75], [0.5, 1.0]))


def test_sentence_bags_weight_words_by_position_and_restart_each_sentence():
    e = t([1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [1.0, 1.0], [4.0, 0.0])[None]  # sentences (0, 1), (2, 3), (4, -)
    pe = position_encoding(2, 2)  # word 1: (0.5, 0.5), word 2: (0.5, 1.0)
    so_far, whole = sentence_bags(e, 2, pe)
    torch.testing.assert_close(so_far[0], t([0.5, 0.0], [0.5, 1.0], [1.0, 1.0], [1.5, 2.0], [2.0, 0.0]))
    torch.testing.assert_close(whole[0], t([0.5, 1.0], [1.5, 2.0], [2.0, 0.0]))
    torch.testing.assert_close(sentence_bags(e, 2, None)[1][0], t([1.0, 1.0], [3.0, 3.0], [4.0, 0.0]))


def test_sentence_layout_reads_only_earlier_sentences_with_the_most_recent_at_age_zero():
    mask, ages = sentence_layout(T=5, L=2, max_age=8)
    torch.testing.assert_close(mask, torch.tensor([[0, 0, 0], [0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0]]).bool())
    assert ages[4, :2].tolist() == [1, 0] and ages[2, 0].item() == 0
    assert sentence_layout(T=5, L=2, max_age=1)[1].max() == 0, "ages >= max_age share the last vector"


def test_memn2n_sentence_memory_by_hand():
    """One hop, identity A = B and C, position and temporal encodings: the question's bag reads the story sentences.

    Sentences of 2 words: s0 = ((1,0), (0,1)), s1 = ((0,1), (1,0)), question ((0,0), (2,0)).  With PE rows
    (0.5, 0.5), (0.5, 1.0): m0 = (0.5, 1.0), m1 = (0.5, 0.5), u = (1, 0).  At the question, s1 has age 0 and
    s0 age 1; T_A(1) = (1, 0), T_C(1) = (0, 2), the rest zero.  Scores u.(m0 + T_A(1)) = 1.5, u.m1 = 0.5;
    o = p0 (m0 + T_C(1)) + p1 m1; y = u + o.
    """
    d = 2  # a hand-checkable width below the knob's bound, hence model_construct
    core = MemN2N(MemN2NParams.model_construct(d_model=d, hops=1, sentence_len=2, max_age=4))
    assert len(core.embed) == 2 and core.temporal.shape == (2, 4, d)  # adjacent tying: A^1 = B, C^1
    with torch.no_grad():
        for lin in [*core.embed, core.out]:
            lin.weight.copy_(torch.eye(d))
        core.out.bias.zero_()
        core.temporal.zero_()
        core.temporal[:, 1] = t([1.0, 0.0], [0.0, 2.0])  # T_A(age 1), T_C(age 1)
    x = t([1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [2.0, 0.0])[None]
    core.record = True
    y, _ = core(x)
    p0 = math.exp(1.5) / (math.exp(1.5) + math.exp(0.5))
    torch.testing.assert_close(y[0, 5], t(1.0 + 0.5, p0 * 3.0 + (1 - p0) * 0.5))
    attn = core.introspect()["attention_hop0"][0]
    torch.testing.assert_close(attn[5], t(p0, 1 - p0, 0.0))  # the question is the query, never a memory
    torch.testing.assert_close(attn[4], t(0.5, 0.5, 0.0))  # u = 0.5 * (0, 0): equal scores
    assert (attn[:2] == 0).all(), "the first sentence has no memory yet"
    torch.testing.assert_close(y[0, :2], t([0.5, 0.0], [0.5, 1.0]))  # o = 0: y is the sentence so far


def test_memn2n_default_is_the_paper_form_on_babi_sentences():
    from amlab.workloads.tasks.babi import SENTENCE_LEN, Babi, BabiParams

    p = MemN2NParams()
    assert (p.memory, p.words, p.tying, p.position, p.hops) == ("sentence", "position", "adjacent", "temporal", 3)
    assert p.sentence_len == SENTENCE_LEN
    b = Babi(BabiParams(facts=4)).sample(torch.Generator().manual_seed(0), 2, "train")
    assert b.inputs.shape[1] == 5 * SENTENCE_LEN and b.mask[:, -1].all(), "question = the last sentence, answered at its end"


@pytest.mark.parametrize("memory", ["sentence", "token"])
def test_memn2n_variants_are_causal(memory):
    core, x = MemN2N(MemN2NParams(d_model=8, sentence_len=3, memory=memory)), torch.randn(2, 8, 8)
    torch.testing.assert_close(core(torch.cat([x[:, :5], torch.randn(2, 3, 8)], 1))[0][:, :5], core(x)[0][:, :5])


# -- Q-MANN -------------------------------------------------------------------------------------

def test_one_bit_quantiser_is_the_sign():
    q = quantize(t(-0.7, -0.01, 0.2, 3.0), 1)
    torch.testing.assert_close(q, t(-1.0, -1.0, 1.0, 1.0))


def test_four_bit_quantiser_rounds_to_sixteen_levels():
    q = quantize(t(-2.0, 0.1, 0.5, 1.0), 4)  # levels -1 + 2k/15
    torch.testing.assert_close(q, t(-1.0, 1 / 15, 7 / 15, 1.0))


@pytest.mark.parametrize("bits", [1, 4, 8])
def test_quantiser_level_count(bits):
    levels = quantize(torch.linspace(-1, 1, 20001), bits).unique()
    assert len(levels) == 2**bits
    torch.testing.assert_close(levels, torch.linspace(-1, 1, 2**bits))


@pytest.mark.parametrize("bits", [1, 4, 8])
def test_quantiser_gradient_is_straight_through(bits):
    x = t(-3.0, -0.4, 0.05, 0.9, 2.0).requires_grad_()
    weights = t(1.0, 2.0, 3.0, 4.0, 5.0)
    (quantize(x, bits) * weights).sum().backward()
    torch.testing.assert_close(x.grad, weights)


def test_hamming_similarity_counts_agreeing_bits_and_is_bounded():
    memory = t([1, -1, 1, 1], [1, 1, 1, 1], [-1, 1, -1, -1])[None]
    key = t([1, -1, 1, 1])[None]
    torch.testing.assert_close(hamming_similarity(memory, key)[0, 0], t(1.0, 0.75, 0.0))
    sim = hamming_similarity(torch.rand(2, 5, 7) * 2 - 1, torch.rand(2, 3, 7) * 2 - 1)
    assert ((sim >= 0) & (sim <= 1)).all()
