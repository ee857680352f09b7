"""Mechanism throughput and implementation ratios (fast form vs reference), measured side by side in one run.

    .venv/bin/python bench/mechanisms.py [--threads 1] [--seconds 1.0] [--only NAME ...]

1. Every registered sequence mechanism that accepts bits, at one small size
   (d_model 32, memories 16 x 8), inside the full model on a copy batch:
   training steps per second (forward + backward + Adam step), carried
   state size and parameter count.
2. Causal attention through SDPA vs the explicit softmax(QK^T)V path that
   dumps use (`causal_attention(explicit=False/True)`, same inputs).
3. The NTM memory step (all heads addressed, read and written at once) vs
   a straightforward reference that loops over heads and shift offsets.
4. The modern recurrences' training forms vs the step-by-step references
   they are tested against, at T 256: chunked GLA / linear attention and
   the chunked (UT transform) delta rule vs their loops, Mamba's parallel
   scan vs its loop, Hyena's FFT convolution vs the direct sum.
5. Fast weights: the loop's windowed reads (attention over the recent
   states, older ones folded into A) vs the paper's recurrence building
   the d x d matrix A at every step, at T 32 and 256.

Absolute numbers depend on the machine and its load; the ratios are the
result.  Torch threads are fixed so runs are comparable.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from amlab.workloads.mechanisms.fast_weights import materialised
from amlab.workloads.mechanisms.linear_recurrences import delta_chunked, delta_loop, gla_chunked, gla_loop
from amlab.workloads.mechanisms.long_conv import direct_causal_conv, fft_causal_conv
from amlab.workloads.mechanisms.ntm import EPS, NTM, NTMParams
from amlab.workloads.mechanisms.ssm import selective_scan, selective_scan_loop
from amlab.workloads.mechanisms.transformer import causal_attention
from amlab.workloads.model import build_model, compute_loss, count_params
from amlab.workloads.registry import MECHANISMS, TASKS
from amlab.workloads.tasks.base import generator

SMALL = {"d_model": 32, "slots": 16, "width": 8}


def rate(fn, seconds: float, warmup: int = 3) -> float:
    """Calls per second of fn(), after warm-up, over at least `seconds` of wall time."""
    for _ in range(warmup):
        fn()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or n < 5:
        fn()
        n += 1
    return n / elapsed


def mechanism_table(seconds: float, only: list[str] | None = None) -> list[tuple[str, float, int, int]]:
    task_entry = TASKS.get("copy")
    task = task_entry.build(task_entry.params(min_len=5, max_len=5, test_lens=(5,)))
    batch = task.sample(generator("bench"), 16, "train")
    rows = []
    for entry in MECHANISMS:
        if entry.kind != "sequence" or "bits" not in entry.modalities or (only and entry.name not in only):
            continue
        fields = entry.params.model_fields
        params = entry.params(**{k: v for k, v in SMALL.items() if k in fields})
        torch.manual_seed(0)
        model = build_model(entry.name, params, task, "copy")
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(model=model, opt=opt):
            logits, _ = model(batch.inputs)
            loss, per_example = compute_loss("bce", logits, batch)
            aux = model.core.auxiliary_loss(per_example.detach())
            opt.zero_grad(set_to_none=True)
            (loss if aux is None else loss + aux).backward()
            opt.step()

        rows.append((entry.name, rate(step, seconds), model.core.state_size(), count_params(model)))
    return rows


def attention_ratio(seconds: float, B=8, H=4, T=256, dh=16) -> tuple[float, float]:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, T, dh, generator=g, requires_grad=True) for _ in range(3))
    fast, _ = causal_attention(q, k, v, explicit=False)
    slow, _ = causal_attention(q, k, v, explicit=True)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)

    def run(explicit):
        y, _ = causal_attention(q, k, v, explicit=explicit)
        y.sum().backward()

    return rate(lambda: run(False), seconds), rate(lambda: run(True), seconds)


def looped_memory_step(core: NTM, h, memory, w_prev):
    """The NTM step written the obvious way: one head at a time, one shift offset at a time."""
    p = core.params
    B, M, Hr, Hw, R = h.shape[0], p.width, p.read_heads, p.write_heads, p.shift_range
    addr, ea = core.interface(h).split([core.heads * core.addr_size, Hw * 2 * M], -1)
    addr, ea = addr.view(B, core.heads, -1), ea.view(B, Hw, 2 * M)
    ws = []
    for head in range(core.heads):
        key, beta, gate, gamma, s = addr[:, head].split([M, 1, 1, 1, core.shifts], -1)
        dots = (memory @ key[:, :, None])[..., 0]
        cos = dots / ((key.pow(2).sum(-1, keepdim=True) + EPS).sqrt() * (memory.pow(2).sum(-1) + EPS).sqrt())
        w = (F.softplus(beta) * cos).softmax(-1)
        g = torch.sigmoid(gate)
        w = g * w + (1 - g) * w_prev[:, head]
        s = s.softmax(-1)
        w = sum(s[:, j : j + 1] * torch.roll(w, j - R, -1) for j in range(core.shifts))
        w = (1 + F.softplus(gamma)) * w.clamp_min(EPS).log()
        ws.append(w.softmax(-1))
    reads = torch.stack([(ws[r][:, None] @ memory)[:, 0] for r in range(Hr)], 1)
    keep = torch.ones_like(memory)
    for j in range(Hw):
        keep = keep * (1 - ws[Hr + j][:, :, None] * torch.sigmoid(ea[:, j, None, :M]))
    memory = memory * keep
    for j in range(Hw):
        memory = memory + ws[Hr + j][:, :, None] * torch.tanh(ea[:, j, None, M:])
    return reads, memory, torch.stack(ws, 1)


def ntm_ratio(seconds: float, heads: int, B=16, T=20) -> tuple[float, float]:
    torch.manual_seed(0)
    core = NTM(NTMParams(d_model=32, slots=32, width=16, read_heads=heads, write_heads=heads, shift_range=1))
    hs = torch.randn(T, B, 32)
    _, memory0, w0, _ = core.initial_state(hs[0][:, None])
    memory0 = memory0 + 0.1 * torch.randn_like(memory0)

    def run(step):
        memory, w, total = memory0, w0, 0.0
        for t in range(T):
            reads, memory, w = step(hs[t], memory, w)
            total = total + reads.sum()
        (total + memory.sum()).backward()
        return reads, memory, w

    def looped(h, m, w):
        return looped_memory_step(core, h, m, w)

    for a, b in zip(run(core.memory_step), run(looped), strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)  # same numbers, or the ratio means nothing
    return rate(lambda: run(core.memory_step), seconds), rate(lambda: run(looped), seconds)


def fast_form_ratios(seconds: float, B=8, H=4, T=256, dk=16, E=64, N=16) -> list[tuple[str, float, float]]:
    """(name, fast form fwd+bwd per second, reference loop per second), each pair checked equal first."""
    g = torch.Generator().manual_seed(0)

    def leaf(*shape, fn=lambda t: t):
        return fn(torch.randn(*shape, generator=g)).requires_grad_()

    q, k, v = (leaf(B, H, T, dk, fn=lambda t: F.normalize(t, dim=-1)) for _ in range(3))
    log_a = leaf(B, H, T, dk, fn=lambda t: F.logsigmoid(t + 3) / 4)
    beta = leaf(B, H, T, fn=torch.sigmoid)
    a = leaf(B, T, E, N, fn=lambda t: torch.exp(-F.softplus(t)))
    b = leaf(B, T, E, N)
    u, h = leaf(B, E, T), leaf(E, T, fn=lambda t: t * 0.1)
    pairs = {
        "linear attention (chunked vs loop)": (lambda: gla_chunked(q, k, v)[0], lambda: gla_loop(q, k, v)[0]),
        "GLA (chunked vs loop)": (lambda: gla_chunked(q, k, v, log_a)[0], lambda: gla_loop(q, k, v, log_a)[0]),
        "delta rule (UT chunked vs loop)": (lambda: delta_chunked(q, k, v, beta)[0], lambda: delta_loop(q, k, v, beta)[0]),
        "selective scan (parallel vs loop)": (lambda: selective_scan(a, b)[0], lambda: selective_scan_loop(a, b)[0]),
        "long conv (FFT vs direct)": (lambda: fft_causal_conv(u, h), lambda: direct_causal_conv(u, h)),
    }
    rows = []
    for name, (fast, ref) in pairs.items():
        torch.testing.assert_close(fast(), ref(), atol=1e-3, rtol=1e-3)  # same numbers, or the ratio means nothing
        rows.append((name, rate(lambda f=fast: f().sum().backward(), seconds), rate(lambda f=ref: f().sum().backward(), seconds)))
    return rows


def fast_weights_ratios(seconds: float, B=32, d=64) -> list[tuple[int, float, float]]:
    """(T, windowed fwd+bwd per second, materialised per second), each pair checked equal first."""
    entry = MECHANISMS.get("fast_weights")
    torch.manual_seed(0)
    core = entry.build(entry.params(d_model=d))
    rows = []
    for T in (32, 256):
        x = torch.randn(B, T, d)
        torch.testing.assert_close(core(x)[0], materialised(core, x)[0], atol=1e-4, rtol=1e-4)
        rows.append((T, rate(lambda x=x: core(x)[0].sum().backward(), seconds),
                     rate(lambda x=x: materialised(core, x)[0].sum().backward(), seconds)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="only these mechanisms in the table")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU; copy batch 16 x len 5 (T = 11), "
          f"d_model 32, memories 16 x 8")
    print()
    print(f"{'mechanism':24s} {'steps/s':>9s} {'state':>7s} {'params':>8s}")
    for name, steps, state, params in mechanism_table(args.seconds, args.only):
        print(f"{name:24s} {steps:9.1f} {state:7d} {params:8d}")
    print()
    sdpa, explicit = attention_ratio(args.seconds)
    print(f"causal attention fwd+bwd (B 8, H 4, T 256, d_k 16): SDPA {sdpa:.1f}/s, explicit {explicit:.1f}/s, "
          f"SDPA speed-up x{sdpa / explicit:.2f}")
    for heads in (1, 4):
        vec, loop = ntm_ratio(args.seconds, heads)
        print(f"NTM memory step fwd+bwd, {heads} read + {heads} write heads (B 16, T 20, N 32 x M 16): "
              f"vectorised {vec:.1f}/s, per-head loop {loop:.1f}/s, speed-up x{vec / loop:.2f}")
    print()
    print("modern recurrences fwd+bwd, training form vs reference (B 8, T 256; H 4 x d_k 16; scan E 64 x N 16):")
    for name, fast, ref in fast_form_ratios(args.seconds):
        print(f"  {name:36s} {fast:8.1f}/s vs {ref:7.1f}/s, speed-up x{fast / ref:.2f}")
    print()
    for T, windowed, built in fast_weights_ratios(args.seconds):
        print(f"fast weights fwd+bwd (B 32, d 64, T {T}): windowed reads {windowed:.1f}/s, A built every step "
              f"{built:.1f}/s, speed-up x{windowed / built:.2f}")


if __name__ == "__main__":
    main()
