"""The attention cores' equations on hand-computed cases, and the SDPA fast paths against the explicit softmax."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from amlab.workloads.mechanisms.additive import additive_scores
from amlab.workloads.mechanisms.sha_rnn import Boom, attend_with_memory
from amlab.workloads.mechanisms.transformer import causal_attention
from amlab.workloads.registry import MECHANISMS


def build(name: str, seed: int = 0, **kw):
    """A core at hand-checkable sizes (below the knobs' search bounds, hence model_construct)."""
    entry = MECHANISMS.get(name)
    torch.manual_seed(seed)
    return entry.build(entry.params.model_construct(**kw))


def gelu(x: float) -> float:
    return x * 0.5 * (1 + math.erf(x / math.sqrt(2)))


# -- additive (Bahdanau) attention ----------------------------------------------------------------

def test_additive_scores_by_hand():
    W, U, v = nn.Linear(2, 2, bias=False), nn.Linear(2, 2), nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        W.weight.copy_(torch.eye(2))
        U.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        U.bias.zero_()
        v.weight.copy_(torch.tensor([[1.0, 2.0]]))
    s = torch.tensor([[0.5, -1.0]])
    h = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # U h_0 = (1, 0), U h_1 = (0, -1); W s = (0.5, -1)
    expected = torch.tensor([[math.tanh(1.5) + 2 * math.tanh(-1.0), math.tanh(0.5) + 2 * math.tanh(-2.0)]])
    torch.testing.assert_close(additive_scores(s, U(h), W, v), expected)


def test_additive_core_attends_over_initial_and_previous_states():
    core = build("additive_attention", d_model=4, attn_dim=3).eval()
    x = torch.randn(2, 3, 4)
    core.record = True
    core(x)
    attn = core.introspect()["attention"]  # (B, T, T): column 0 the initial state, column j the state h_{j-1}
    assert attn.shape == (2, 3, 3)
    torch.testing.assert_close(attn[:, 0, 0], torch.ones(2))  # step 0 sees only the initial state
    with torch.no_grad():  # step 1: query h_0, memory [0, h_0]
        h0 = core.cell(torch.cat([x[:, 0], torch.zeros(2, 4)], -1), torch.zeros(2, 4))
        mem = torch.stack([torch.zeros(2, 4), h0], 1)
        e = additive_scores(h0, core.U(mem), core.W, core.v)
    torch.testing.assert_close(attn[:, 1, :2], e.softmax(-1))
    assert (attn[:, 1, 2:] == 0).all() and (attn[:, 2] > 0).all()  # nothing from the future


# -- SHA-RNN's Boom -------------------------------------------------------------------------------

def test_boom_by_hand():
    boom = Boom(2, mult=4)
    with torch.no_grad():  # up(x) = (x0, x1, x0 + 1, x1 + 1, x0 + 2, x1 + 2, x0 + 3, x1 + 3)
        boom.up.weight.copy_(torch.eye(2).repeat(4, 1))
        boom.up.bias.copy_(torch.tensor([0.0, 0, 1, 1, 2, 2, 3, 3]))
    x = torch.tensor([[0.5, -1.5]])
    expected = torch.tensor([[sum(gelu(0.5 + k) for k in range(4)), sum(gelu(-1.5 + k) for k in range(4))]])
    torch.testing.assert_close(boom(x), expected)


# -- fast weights ---------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["windowed", "materialised"])
def test_fast_weights_update_and_inner_step_by_hand(form):
    """One step by hand, for the loop and for the paper-form reference the loop is tested against below."""
    from amlab.workloads.mechanisms.fast_weights import materialised

    core = build("fast_weights", d_model=2, lam=0.5, eta=0.25, inner_steps=1)
    with torch.no_grad():
        core.W.weight.copy_(torch.eye(2))
        core.W.bias.zero_()
        core.C.weight.copy_(torch.eye(2))
    x, state = torch.zeros(1, 1, 2), (torch.tensor([[1.0, 2.0]]), torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]))
    if form == "windowed":
        core.record = True
        y, (h_new, A) = core(x, state)
        norms = core.introspect()["fast_weight_norm"]
    else:
        y, (h_new, A), norms = materialised(core, x, state)
    # A = 0.5 A_prev + 0.25 h h^T
    torch.testing.assert_close(A, torch.tensor([[[0.75, 0.5], [0.5, 1.0]]]))
    # z = W h + C x = (1, 2); h_0 = relu(z) = (1, 2); A h_0 = (1.75, 2.5); z + A h_0 = (2.75, 4.5)
    # LN: mean 3.625, variance 0.875^2 -> (-1, 1) * 0.875 / sqrt(0.875^2 + eps); relu -> (0, .)
    expected = torch.tensor([[0.0, 0.875 / math.sqrt(0.875**2 + 1e-5)]])
    torch.testing.assert_close(h_new, expected)
    torch.testing.assert_close(y[:, 0], expected)
    torch.testing.assert_close(norms, torch.tensor([[math.sqrt(0.75**2 + 2 * 0.5**2 + 1)]]))


@pytest.mark.parametrize("with_state", [False, True])
def test_fast_weights_windowed_reads_equal_the_materialised_matrix(with_state):
    """The loop attends to recent states and folds older ones into A; the paper's recurrence builds A every step.

    Long enough to fold twice (past WINDOW), two inner steps, from a given state: outputs, final state,
    recorded norms and gradients must all match the direct recurrence.
    """
    from amlab.workloads.mechanisms.fast_weights import WINDOW, materialised

    core = build("fast_weights", d_model=6, lam=0.9, eta=0.5, inner_steps=2)
    x = torch.randn(2, 2 * WINDOW + 5, 6, requires_grad=True)
    state = (torch.randn(2, 6), torch.randn(2, 6, 6) * 0.1) if with_state else None
    expected, (h, A), norms = materialised(core, x, state)
    core.record = True
    y, (h_end, A_end) = core(x, state)
    for got, want in ((y, expected), (h_end, h), (A_end, A), (core.introspect()["fast_weight_norm"], norms)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    got = torch.autograd.grad(y.square().sum(), [x, core.W.weight])
    want = torch.autograd.grad(expected.square().sum(), [x, core.W.weight])
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


def test_fast_weights_zero_inner_steps_is_a_plain_relu_rnn():
    core = build("fast_weights", d_model=3, inner_steps=0)
    x = torch.randn(2, 4, 3)
    y, _ = core(x)
    h, outs = torch.zeros(2, 3), []
    for t in range(4):
        h = torch.relu(core.W(h) + core.C(x[:, t]))
        outs.append(h)
    torch.testing.assert_close(y, torch.stack(outs, 1))


# -- hierarchical attention -----------------------------------------------------------------------

def test_hierarchical_pooling_weights_sum_to_one_and_respect_sentences():
    L, T = 3, 8
    core = build("hierarchical_attention", d_model=6, sentence_len=L)
    x = torch.randn(2, T, 6)
    core.record = True
    core(x)
    tr = core.introspect()
    words, sents = tr["word_attention"], tr["sentence_attention"]
    assert words.shape == (2, T, L) and sents.shape == (2, T, -(-T // L))
    torch.testing.assert_close(words.sum(-1), torch.ones(2, T))
    torch.testing.assert_close(sents.sum(-1), torch.ones(2, T))
    for t in range(T):
        assert (words[:, t, t % L + 1 :] == 0).all(), "a word pools only words 0..t of its own sentence"
        assert (words[:, t, : t % L + 1] > 0).all()
        assert (sents[:, t, t // L + 1 :] == 0).all(), "no weight on sentences that have not started"
        assert (sents[:, t, : t // L + 1] > 0).all()
    # the word encoder restarts at each sentence: changing sentence 0 leaves sentence 1's word weights alone
    x2 = x.clone()
    x2[:, :L] = torch.randn(2, L, 6)
    core(x2)
    tr2 = core.introspect()
    torch.testing.assert_close(tr2["word_attention"][:, L:], words[:, L:])
    assert not torch.allclose(tr2["sentence_attention"][:, L:], sents[:, L:])


# -- hard attention -------------------------------------------------------------------------------

def test_hard_attention_samples_only_the_past():
    core = build("hard_attention", d_model=4, soft_prob=0.0).train()
    core.record = True
    x = torch.randn(3, 5, 4)
    _, state = core(x[:, :2])  # two remembered positions before the next chunk
    seen = torch.zeros(5, 7, dtype=torch.bool)
    for seed in range(50):
        torch.manual_seed(seed)
        core(x[:, 2:], state)
        pos = core.introspect()["sampled_positions"].long()  # (B, 3)
        assert (pos <= 2 + torch.arange(3)).all(), "a step sampled a position after itself"
        seen[pos.flatten(), torch.arange(3).repeat(3)] = True
    assert seen[:2, 0].all(), "step 0 of the chunk should sample the remembered positions too"
    assert seen[:, 2].sum() > 1, "samples should vary (stochastic, not argmax, in training)"


def _log_prob_of(core, x, pos):
    core.eval()
    core.record = True
    with torch.no_grad():
        core(x)
    core.train()
    return core.introspect()["attention"][0].gather(-1, pos[0][:, None]).log().sum()


@pytest.mark.parametrize(("loss", "direction"), [(0.2, 1), (1.8, -1)])
def test_hard_attention_reinforce_sign(loss, direction):
    """An example whose loss beat the baseline makes its sampled positions more likely, and vice versa."""
    core = build("hard_attention", seed=1, d_model=4, soft_prob=0.0, entropy_weight=0.0, baseline_decay=0.9).train()
    core.record = True
    x = torch.randn(1, 6, 4, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(3)
    core(x)
    pos = core.introspect()["sampled_positions"].long()
    before = _log_prob_of(core, x, pos)
    core.baseline.fill_(1.0)
    core.baseline_set.fill_(True)
    torch.manual_seed(3)
    core(x)
    aux = core.auxiliary_loss(torch.tensor([loss]))
    torch.testing.assert_close(aux, (loss - 1.0) * before)  # (L - b) * sum_t log alpha(s_t)
    torch.testing.assert_close(core.baseline, torch.tensor(0.9 + 0.1 * loss))
    aux.backward()
    with torch.no_grad():
        for p in core.parameters():
            if p.grad is not None:
                p -= 1e-2 * p.grad
    after = _log_prob_of(core, x, pos)
    assert direction * (after - before) > 0
    assert core.auxiliary_loss(torch.tensor([loss])) is None, "one REINFORCE term per forward"


# -- SDPA fast paths equal the explicit softmax ---------------------------------------------------

def test_transformer_sdpa_equals_explicit():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 8, generator=g) for _ in range(3))
    fast, _ = causal_attention(q, k, v, explicit=False)
    slow, weights = causal_attention(q, k, v, explicit=True)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 9))


def test_memory_attention_sdpa_equals_explicit():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 5, 8, generator=g)
    k, v = torch.randn(2, 9, 8, generator=g), torch.randn(2, 9, 8, generator=g)  # 4 remembered positions
    fast, _ = attend_with_memory(q, k, v, explicit=False)
    slow, weights = attend_with_memory(q, k, v, explicit=True)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    assert (weights[:, 0, 5:] == 0).all() and (weights[:, 0, :5] > 0).all()  # query 0 sees the memory and itself


@pytest.mark.parametrize("name", ["transformer", "sha_rnn", "temporal_attention"])
def test_sequence_cores_sdpa_path_equals_recording_path(name):
    core = build(name, d_model=16)
    x = torch.randn(2, 7, 16)
    fast, _ = core(x)
    core.record = True
    slow, _ = core(x)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)


def test_non_local_sdpa_equals_explicit():
    core = build("non_local", d_model=8, inner=4)
    nn.init.normal_(core.out.weight)  # the zero-initialised residual would hide the attention
    x = torch.randn(2, 8, 5, 6)
    fast = core(x)
    core.record = True
    slow = core(x)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["additive_attention", "hard_attention", "hierarchical_attention", "sha_rnn", "fast_weights",
                                  "temporal_attention"])
def test_bf16_autocast_whole_and_chunked(name):
    """fp32 carried state meets bf16 activations; CPU bf16 autocast stands in where no GPU is visible."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    core = build(name, d_model=16).to(device)
    x = torch.randn(2, 9, 16, device=device)
    with torch.autocast(device, dtype=torch.bfloat16):
        y, state = core(x[:, :4])
        y2, _ = core(x[:, 4:], state)
        aux = core.auxiliary_loss(torch.rand(2, device=device))
    (y.float().sum() + y2.float().sum() + (0 if aux is None else aux)).backward()
    assert torch.isfinite(y.float()).all() and torch.isfinite(y2.float()).all()
    assert all(torch.isfinite(p.grad).all() for p in core.parameters() if p.grad is not None)
