"""The Core contract, checked on every registered sequence mechanism (spatial/glimpse kinds are skipped).

Whatever is registered is covered: a new mechanism gets shape, gradient,
determinism, causality, chunking, introspection and state-size checks for
free, at tiny sizes.
"""

from __future__ import annotations

import pytest
import torch

from amlab.workloads.registry import MECHANISMS

B, T, D = 3, 7, 16
SEQUENCE = [e.name for e in MECHANISMS if e.kind == "sequence"]
RECURRENT = [e.name for e in MECHANISMS if e.kind == "sequence" and e.recurrent]
# Small memories so the suite stays fast; any other knob keeps its default.
SMALL = {
    "ntm": {"slots": 8, "width": 6}, "qmann": {"slots": 8, "width": 6}, "dnc": {"slots": 8, "width": 6},
    "hierarchical_attention": {"sentence_len": 3},  # T = 7 must hold complete sentences
    "memn2n": {"sentence_len": 3},  # T = 7 must hold complete sentences, the memories
}
# Weightings that are sub-stochastic by design: the DNC's write weighting is gated (sum <= 1) and its
# forward/backward read modes follow link rows that sum to <= 1.  MemN2N reads nothing before its first complete
# sentence (no memory yet).
SUBSTOCHASTIC = {"dnc", "memn2n"}
WEIGHTINGS = ("attention", "read_weights", "write_weights")


def build(name: str, seed: int = 0, **extra):
    entry = MECHANISMS.get(name)
    fields = entry.params.model_fields
    kw = {"d_model": D} if "d_model" in fields else {}
    kw.update(SMALL.get(name, {}))
    kw.update(extra)
    torch.manual_seed(seed)
    return entry.build(entry.params(**kw))


def run(core, x, state=None, seed: int = 1):
    torch.manual_seed(seed)  # stochastic cores (hard attention) draw the same samples every call
    return core(x, state)


def inputs(seed: int = 2) -> torch.Tensor:
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed))


def floats_per_sequence(state) -> int:
    """Floating-point numbers in a (nested) state, per batch element."""
    if state is None:
        return 0
    if isinstance(state, torch.Tensor):
        return state.numel() // B if state.is_floating_point() else 0
    if isinstance(state, dict):
        state = list(state.values())
    return sum(floats_per_sequence(s) for s in state)


def test_registry_has_the_catalogue_sequence_cores():
    mine = {"rnn", "lstm", "gru", "peephole_lstm", "wm_lstm", "ntm", "qmann", "dnc", "memn2n", "transformer"}
    assert mine <= set(SEQUENCE)
    for name in mine:
        entry = MECHANISMS.get(name)
        assert entry.paper and entry.family
        assert {"bits", "tokens", "real"} <= set(entry.modalities)


@pytest.mark.parametrize("name", SEQUENCE)
def test_shapes_and_finite(name):
    y, _ = run(build(name), inputs())
    assert y.shape == (B, T, D)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", SEQUENCE)
def test_gradients_reach_every_parameter(name):
    core = build(name)
    y, _ = run(core, inputs())
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
    loss = (y * w).sum()
    aux = core.auxiliary_loss(torch.rand(B, generator=torch.Generator().manual_seed(4)))
    (loss if aux is None else loss + aux).backward()
    missing = [n for n, p in core.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"{name}: no gradient reaches {missing}"
    assert all(torch.isfinite(p.grad).all() for p in core.parameters())


@pytest.mark.parametrize("name", SEQUENCE)
def test_seeded_determinism(name):
    y1, _ = run(build(name, seed=5), inputs())
    y2, _ = run(build(name, seed=5), inputs())
    y3, _ = run(build(name, seed=6), inputs())
    assert torch.equal(y1, y2)
    assert not torch.equal(y1, y3), "the seed should change the initialisation"


@pytest.mark.parametrize("name", SEQUENCE)
def test_causal(name):
    core = build(name)
    x = inputs()
    y, _ = run(core, x)
    for t in (0, 3, T - 2):
        x2 = x.clone()
        x2[:, t + 1 :] = torch.randn(B, T - t - 1, D, generator=torch.Generator().manual_seed(t))
        y2, _ = run(core, x2)
        torch.testing.assert_close(y2[:, : t + 1], y[:, : t + 1], atol=1e-6, rtol=0)
        assert not torch.allclose(y2[:, t + 1 :], y[:, t + 1 :]), "later inputs should matter"


@pytest.mark.parametrize("name", RECURRENT)
def test_two_chunks_with_carried_state_equal_whole(name):
    core = build(name).eval()  # chunked inference: stochastic cores (hard attention) read deterministically
    x = inputs()
    whole, _ = run(core, x)
    head, state = run(core, x[:, :3])
    tail, _ = run(core, x[:, 3:], state, seed=2)
    torch.testing.assert_close(torch.cat([head, tail], 1), whole, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", RECURRENT)
def test_fixed_size_state_is_what_state_size_counts(name):
    core = build(name)
    _, short = run(core, inputs()[:, :3])
    _, full = run(core, inputs())
    if floats_per_sequence(short) != floats_per_sequence(full):
        pytest.skip("the state grows with the sequence (a cache of past states): state_size() cannot count it")
    assert core.state_size() == floats_per_sequence(full) > 0


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("lstm", {"layers": 2}, 2 * 2 * D),  # (h, c) per layer
        ("rnn", {"layers": 3}, 3 * D),
        ("wm_lstm", {}, 2 * D),
        # controller (h, c) + memory N*M + 2 heads' weightings + 1 read vector
        ("ntm", {}, 2 * D + 8 * 6 + 2 * 8 + 6),
        ("ntm", {"controller": "mlp", "read_heads": 2}, 8 * 6 + 3 * 8 + 2 * 6),
        # controller + memory + usage + link + precedence + R read weightings + write weighting + R reads
        ("dnc", {"read_heads": 2}, 2 * D + 8 * 6 + 8 + 64 + 8 + 2 * 8 + 8 + 2 * 6),
        ("memn2n", {}, 0),
    ],
)
def test_state_size_by_hand(name, params, expected):
    assert build(name, **params).state_size() == expected


@pytest.mark.parametrize("name", SEQUENCE)
def test_record_gives_normalised_weightings(name):
    core = build(name)
    y_plain, _ = run(core, inputs())
    core.record = True
    y_rec, _ = run(core, inputs())
    traces = core.introspect()
    assert traces, f"{name}: nothing recorded"
    torch.testing.assert_close(y_rec, y_plain, atol=1e-5, rtol=0)  # recording must not change the computation
    for key, value in traces.items():
        assert value.shape[0] == B, f"{key}: leading dimension must be the batch"
        assert torch.isfinite(value).all(), key
        if any(w in key for w in WEIGHTINGS):
            sums = value.sum(-1)
            assert (value >= 0).all(), key
            if name in SUBSTOCHASTIC:
                assert (sums <= 1 + 1e-5).all(), key
            else:
                torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-5, rtol=0, msg=key)


@pytest.mark.parametrize("name", ["ntm", "qmann", "dnc"])
def test_memory_weightings_are_recorded_per_step(name):
    core = build(name)
    core.record = True
    run(core, inputs())
    traces = core.introspect()
    assert traces["read_weights"].shape[-2:] == (T, 8)
    assert traces["write_weights"].shape[-2:] == (T, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 autocast is a CUDA path")
@pytest.mark.parametrize("name", SEQUENCE)
def test_bf16_autocast_on_cuda(name):
    core = build(name).cuda()
    x = inputs().cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y, _ = run(core, x)
    y.float().square().mean().backward()
    assert torch.isfinite(y).all()
    assert all(torch.isfinite(p.grad).all() for p in core.parameters() if p.grad is not None)
