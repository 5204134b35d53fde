"""`python -m minilooped.bench ops`: forward + backward time of the core's heaviest ops
against PyTorch on the CPU, float32, with their ratio (core / torch; lower is better).

Each case builds the same inputs for both libraries, runs forward and backward a few
times to warm up, then reports the median of ``--repeat`` timed runs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time


def _set_threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(n))


def _median_ms(fn, repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def _cases(np, quick: bool):
    """(name, shapes, core_fn_factory, torch_fn_factory) with shared random inputs."""
    rng = np.random.default_rng(0)
    s = 4 if quick else 1  # --quick shrinks every size, for CI

    def randn(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    cases = []
    # a GPT-2 sized linear layer: (B*T, C) x (C, 4C)
    n, c = 1024 // s, 768 // s
    x, w, b = randn(n, c), randn(4 * c, c) * 0.02, randn(4 * c)
    cases.append(("linear (matmul)", f"({n}, {c}) x ({4*c}, {c})^T",
                  lambda ml, F: _fb_core(ml, lambda X, W, B: F.linear(X, W, B).sum(), x, w, b),
                  lambda torch, F: _fb_torch(torch, lambda X, W, B: F.linear(X, W, B).sum(), x, w, b)))
    # layer norm over the channels of a (B, T, C) activation
    B, T = 8 // min(s, 2), 256 // s
    xa, g, be = randn(B, T, c), randn(c), randn(c)
    cases.append(("layer_norm", f"({B}, {T}, {c})",
                  lambda ml, F: _fb_core(ml, lambda X, G, Bb: (F.layer_norm(X, (c,), G, Bb) * X).sum(), xa, g, be),
                  lambda torch, F: _fb_torch(torch, lambda X, G, Bb: (F.layer_norm(X, (c,), G, Bb) * X).sum(), xa, g, be)))
    # softmax + cross-entropy over GPT-2's vocabulary
    v, m = 50257 // s, 512 // s
    logits = randn(m, v)
    targets = rng.integers(0, v, size=m)
    cases.append(("softmax + cross_entropy", f"({m}, {v})",
                  lambda ml, F: _fb_core(ml, lambda L: F.cross_entropy(L, targets), logits),
                  lambda torch, F: _fb_torch(torch, lambda L: F.cross_entropy(L, torch.from_numpy(targets)), logits)))
    # token embedding lookup with its scatter-add backward
    table = randn(v, c) * 0.02
    ids = rng.integers(0, v, size=(B, T))
    proj = randn(B, T, c)
    cases.append(("embedding", f"ids ({B}, {T}) into ({v}, {c})",
                  lambda ml, F: _fb_core(ml, lambda W: (F.embedding(ids, W) * ml.Tensor(proj)).sum(), table),
                  lambda torch, F: _fb_torch(torch, lambda W: (F.embedding(torch.from_numpy(ids), W) * torch.from_numpy(proj)).sum(), table)))
    # attention-sized batched matmul: q k^T for 12 heads
    nh, hs = 12, 64
    q, k = randn(4 // min(s, 2), nh, T, hs), randn(4 // min(s, 2), nh, T, hs)
    cases.append(("batched matmul q k^T", f"{tuple(q.shape)} x {tuple(k.shape)}^T",
                  lambda ml, F: _fb_core(ml, lambda Q, K: (Q @ K.transpose(-2, -1)).sum(), q, k),
                  lambda torch, F: _fb_torch(torch, lambda Q, K: (Q @ K.transpose(-2, -1)).sum(), q, k)))
    vv = randn(*q.shape)
    cases.append(("causal attention (fused)", f"q, k, v {tuple(q.shape)}",
                  lambda ml, F: _fb_core(ml, lambda Q, K, V: (F.scaled_dot_product_attention(Q, K, V, is_causal=True) * V).sum(), q, k, vv),
                  lambda torch, F: _fb_torch(torch, lambda Q, K, V: (F.scaled_dot_product_attention(Q, K, V, is_causal=True) * V).sum(), q, k, vv)))
    return cases


def _fb_core(ml, f, *arrays):
    params = [ml.Tensor(a, requires_grad=True) for a in arrays]

    def run():
        for p in params:
            p.grad = None
        f(*params).backward()
    return run


def _fb_torch(torch, f, *arrays):
    params = [torch.tensor(a, requires_grad=True) for a in arrays]

    def run():
        for p in params:
            p.grad = None
        f(*params).backward()
    return run


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m minilooped.bench ops", description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=10, help="timed runs per case (median reported)")
    ap.add_argument("--threads", type=int, default=2, help="BLAS / torch threads")
    ap.add_argument("--quick", action="store_true", help="smaller shapes (used by CI)")
    args = ap.parse_args(argv)
    _set_threads(args.threads)

    import numpy as np
    import minilooped as ml
    import minilooped.functional as mlF
    try:
        import torch
        import torch.nn.functional as tF
    except ImportError:
        raise SystemExit("the ops bench compares with PyTorch: install it with `pip install torch==2.13.0`")
    torch.set_num_threads(args.threads)

    rows = []
    for name, shape, core, ref in _cases(np, args.quick):
        t_core = _median_ms(core(ml, mlF), args.repeat)
        t_torch = _median_ms(ref(torch, tF), args.repeat)
        rows.append((name, shape, t_core, t_torch, t_core / t_torch))
    print(f"forward + backward, float32, {args.threads} threads, median of {args.repeat} runs")
    w = max(len(r[0]) for r in rows)
    print(f"{'op':<{w}}  {'shape':<34} {'core ms':>9} {'torch ms':>9} {'ratio':>6}")
    for name, shape, tc, tt, r in rows:
        print(f"{name:<{w}}  {shape:<34} {tc:9.2f} {tt:9.2f} {r:6.2f}")
    total_c, total_t = sum(r[2] for r in rows), sum(r[3] for r in rows)
    print(f"{'total':<{w}}  {'':<34} {total_c:9.2f} {total_t:9.2f} {total_c / total_t:6.2f}")


if __name__ == "__main__":
    main()
