"""Linear attention, GLA, DeltaNet, Mamba and Hyena: each fast form equals its reference on random inputs.

As flash-linear-attention tests its kernels against naive references: the chunked / parallel-scan /
FFT forms the cores train with are held equal (float64) to step-by-step loops or direct sums, across
chunk boundaries and from a carried state, plus a few cases small enough to compute by hand.  The
registry-wide contract (shapes, gradients, causality, two chunks = one run, traces) is in
test_mechanism_contract.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from amlab.workloads.mechanisms._mixers import HeadParams
from amlab.workloads.mechanisms.linear_recurrences import (
    EPS,
    LinearAttentionMixer,
    decayed_scores,
    delta_chunked,
    delta_loop,
    delta_mixing,
    gla_chunked,
    gla_loop,
)
from amlab.workloads.mechanisms.long_conv import ImplicitFilter, direct_causal_conv, fft_causal_conv
from amlab.workloads.mechanisms.ssm import selective_scan, selective_scan_loop
from amlab.workloads.registry import MECHANISMS

B, H, T, DK, DV = 2, 3, 37, 5, 4
NEW = ("linear_attention", "gla", "deltanet", "mamba", "hyena")
CHUNKS = (1, 4, 16, 64)  # one step, uneven chunks (37 = 9 x 4 + 1), two chunks, one chunk


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def close(a, b, atol=1e-10):
    torch.testing.assert_close(a, b, atol=atol, rtol=0)


def qkv(seed=0):
    return rand(B, H, T, DK, seed=seed), rand(B, H, T, DK, seed=seed + 1), rand(B, H, T, DV, seed=seed + 2)


# -- linear attention and GLA -------------------------------------------------------------------

@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("gated", [False, True])
def test_gla_chunked_equals_recurrent_loop(chunk, gated):
    q, k, v = qkv()
    log_a = F.logsigmoid(rand(B, H, T, DK, seed=3) + 2) if gated else None
    S0 = rand(B, H, DK, DV, seed=4)
    o_ref, S_ref = gla_loop(q, k, v, log_a, S0)
    o, S = gla_chunked(q, k, v, log_a, S0, chunk=chunk)
    close(o, o_ref)
    close(S, S_ref)


def test_linear_attention_recurrent_equals_masked_parallel_form():
    """The mixer (chunked recurrence with a ones column for the normaliser) against softmax-free attention written out."""
    torch.manual_seed(0)
    mixer = LinearAttentionMixer(HeadParams(d_model=12, heads=3)).double()
    x = rand(B, T, 12, seed=5)
    y, S, traces = mixer(x, None, record=True)
    q, k, v = mixer.qkv(x).view(B, T, 3, 3, 4).permute(2, 0, 3, 1, 4)
    q, k = F.elu(q) + 1, F.elu(k) + 1
    scores = (q @ k.transpose(-1, -2)) * torch.ones(T, T, dtype=torch.bool).tril()
    weights = scores / (scores.sum(-1, keepdim=True) + EPS)
    close(y, mixer.out((weights @ v).transpose(1, 2).flatten(2)), atol=1e-8)
    close(traces["attention"], weights, atol=1e-8)
    assert S.shape == (B, 3, 4, 5)  # dk x (dv + normaliser column)


def test_fixed_decay_is_retention_with_its_decay_mask():
    """A constant gate gamma per head is RetNet's retention: o = (Q K^T * D) V with D_ts = gamma^(t-s), s <= t."""
    q, k, v = qkv(seed=6)
    gamma = torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64)
    log_a = gamma.log()[None, :, None, None].expand(B, H, T, DK)
    lag = torch.arange(T)[:, None] - torch.arange(T)[None]
    D = torch.where(lag >= 0, gamma[:, None, None] ** lag.clamp_min(0), 0.0)
    o, _ = gla_chunked(q, k, v, log_a, chunk=16)
    close(o, ((q @ k.transpose(-1, -2)) * D) @ v)
    close(decayed_scores(q, k, log_a), (q @ k.transpose(-1, -2)) * D)


# -- delta rule ---------------------------------------------------------------------------------

def delta_inputs(seed=0):
    q, k, v = qkv(seed)
    return F.normalize(q, dim=-1), F.normalize(k, dim=-1), v, torch.sigmoid(rand(B, H, T, seed=seed + 7))


@pytest.mark.parametrize("chunk", CHUNKS)
def test_delta_rule_chunked_ut_transform_equals_sequential(chunk):
    q, k, v, beta = delta_inputs()
    S0 = rand(B, H, DK, DV, seed=8)
    o_ref, S_ref = delta_loop(q, k, v, beta, S0)
    o, S = delta_chunked(q, k, v, beta, S0, chunk=chunk)
    close(o, o_ref)
    close(S, S_ref)


def test_delta_mixing_matrix_reproduces_the_output():
    q, k, v, beta = delta_inputs(seed=9)
    o, _ = delta_chunked(q, k, v, beta)
    M = delta_mixing(q, k, beta)
    close(M @ v, o)
    assert (M.triu(1) == 0).all(), "causal: no weight on later values"


def test_one_delta_step_by_hand():
    S0 = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)  # rows: key dims, columns: value dims
    k = torch.tensor([1.0, 0.0], dtype=torch.float64)
    v = torch.tensor([3.0, -2.0], dtype=torch.float64)
    q = torch.tensor([1.0, 1.0], dtype=torch.float64)
    # k S0 - v = (1, 2) - (3, -2) = (-2, 4); S1 = S0 - 0.5 k^T (-2, 4) changes only row 0: (1 + 1, 2 - 2)
    o, S1 = delta_loop(q.view(1, 1, 1, 2), k.view(1, 1, 1, 2), v.view(1, 1, 1, 2), torch.tensor([[[0.5]]], dtype=torch.float64),
                       S0.view(1, 1, 2, 2))
    close(S1[0, 0], torch.tensor([[2.0, 0.0], [3.0, 4.0]], dtype=torch.float64))
    close(o[0, 0, 0], torch.tensor([5.0, 4.0], dtype=torch.float64))  # q S1


def test_delta_rule_with_beta_one_stores_exactly_where_hebbian_adds_up():
    """Writing v under a unit key with beta = 1 makes k S = v whatever was stored; the plain sum S + k^T v does not."""
    k = F.normalize(rand(1, 1, 1, DK, seed=10), dim=-1)
    v, S0 = rand(1, 1, 1, DV, seed=11), rand(1, 1, DK, DV, seed=12)
    _, S = delta_loop(k, k, v, torch.ones(1, 1, 1, dtype=torch.float64), S0)
    close(k[0] @ S[0], v[0])
    _, S_hebb = gla_loop(k, k, v, None, S0)
    assert not torch.allclose(k[0] @ S_hebb[0], v[0])


# -- selective scan -----------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", CHUNKS)
def test_selective_parallel_scan_equals_loop(chunk):
    E, N = 6, 4
    a = torch.exp(-F.softplus(rand(B, T, E, 1, seed=13)) * torch.arange(1, N + 1, dtype=torch.float64))  # exp(Delta A)
    b = rand(B, T, E, N, seed=14)
    h0 = rand(B, E, N, seed=15)
    hs_ref, h_ref = selective_scan_loop(a, b, h0)
    hs, h = selective_scan(a, b, h0, chunk=chunk)
    close(hs, hs_ref)
    close(h, h_ref)


def test_selective_scan_gradients_equal_the_loops():
    """The scan's hand-written backward (a reverse-time scan) against autograd through the loop, and gradcheck."""
    E, N = 3, 2
    a = torch.sigmoid(rand(B, 9, E, N, seed=20)).requires_grad_()
    b, h0 = rand(B, 9, E, N, seed=21).requires_grad_(), rand(B, E, N, seed=22).requires_grad_()
    w = rand(B, 9, E, N, seed=23)
    grads = [torch.autograd.grad((scan(a, b, h0)[0] * w).sum() + scan(a, b, h0)[1].sum(), (a, b, h0))
             for scan in (selective_scan_loop, lambda a, b, h: selective_scan(a, b, h, chunk=4))]
    for got, want in zip(grads[1], grads[0], strict=True):
        close(got, want)
    assert torch.autograd.gradcheck(lambda a, b, h: selective_scan(a, b, h, chunk=4)[0], (a, b, h0))


def test_scan_by_hand():
    a = torch.full((1, 4, 1), 0.5, dtype=torch.float64)
    b = torch.ones(1, 4, 1, dtype=torch.float64)
    hs, _ = selective_scan(a, b, torch.tensor([[8.0]], dtype=torch.float64), chunk=4)
    close(hs[0, :, 0], torch.tensor([5.0, 3.5, 2.75, 2.375], dtype=torch.float64))  # h = h / 2 + 1 from 8


# -- long convolution ---------------------------------------------------------------------------

@pytest.mark.parametrize(("dtype", "atol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_fft_conv_equals_direct_causal_conv(dtype, atol):
    u, h = rand(B, 6, T, seed=16).to(dtype), (rand(6, T, seed=17) * 0.5).to(dtype)
    y = fft_causal_conv(u, h)
    close(y, direct_causal_conv(u, h), atol=atol)
    # and torch's cross-correlation with the kernel flipped and T - 1 zeros on the left
    ref = F.conv1d(F.pad(u, (T - 1, 0)), h.flip(-1)[:, None], groups=6)
    close(y, ref, atol=atol)


def test_fft_conv_does_not_wrap_around():
    u = torch.zeros(1, 1, 16, dtype=torch.float64)
    u[..., -1] = 1.0  # an impulse at the last step must not leak into earlier outputs through the circular FFT
    y = fft_causal_conv(u, torch.ones(1, 16, dtype=torch.float64))
    close(y[..., :-1], torch.zeros(1, 1, 15, dtype=torch.float64))
    close(y[..., -1], torch.ones(1, 1, dtype=torch.float64))


def test_implicit_filter_taps_do_not_depend_on_length():
    """Chunked inference regenerates the filter at a longer length; its first taps must not move."""
    torch.manual_seed(0)
    f = ImplicitFilter(channels=4, order=2, width=8, reach=64).double()
    close(f(50, torch.float64)[..., :20], f(20, torch.float64))


# -- the cores ----------------------------------------------------------------------------------

def build(name, **kw):
    entry = MECHANISMS.get(name)
    torch.manual_seed(0)
    return entry.build(entry.params(d_model=8, layers=1, **kw)).double()


@pytest.mark.parametrize("name", NEW)
def test_core_across_chunk_boundaries_is_causal_and_resumable(name):
    """T = 150 spans several chunks (of 64 steps; 16 for GLA): a later change leaves earlier outputs alone,
    and a run split at 70 with the carried state equals the whole run."""
    core = build(name)
    x = rand(2, 150, 8, seed=18)
    y, _ = core(x)
    x2 = x.clone()
    x2[:, 100:] = rand(2, 50, 8, seed=19)
    y2, _ = core(x2)
    close(y2[:, :100], y[:, :100], atol=1e-9)
    assert not torch.allclose(y2[:, 100:], y[:, 100:])
    head, state = core(x[:, :70])
    tail, _ = core(x[:, 70:], state)
    close(torch.cat([head, tail], 1), y, atol=1e-9)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("linear_attention", 2 * 4 * 4 * 5),  # heads x dk x (dv + 1) per layer, d 16, 4 heads, 2 layers
        ("gla", 2 * 4 * 4 * 4),
        ("deltanet", 2 * 4 * 4 * 4),
        ("mamba", 2 * 32 * (16 + 3)),  # expand 2 x d channels x (N + d_conv - 1)
        ("hyena", 2 * 3 * 16 * 2),  # (order + 1) x d short-conv channels x (kernel - 1); the long convs' inputs grow
    ],
)
def test_state_size_by_hand(name, expected):
    entry = MECHANISMS.get(name)
    assert entry.build(entry.params(d_model=16)).state_size() == expected


def test_registered_under_the_catalogue_names():
    for name in NEW:
        entry = MECHANISMS.get(name)
        assert entry.paper and entry.family and entry.recurrent
        assert {"bits", "tokens", "real"} <= set(entry.modalities)
