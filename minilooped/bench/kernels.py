"""`python -m minilooped.bench kernels`: the measurements behind each optimisation of the core.

Appendix A1 of the book explains why the core is written the way it is. Each claim there
rests on one of these experiments, which time a plain NumPy formulation against the one
the core uses, on the shapes of the bench's training configs:

    fusion       a training step with layer norm, GELU, attention and cross-entropy written as
                 chains of elementary ops (autograd differentiates them) vs the fused ops
    matmul       the matrix products of a linear layer, NumPy (OpenBLAS) vs PyTorch, same threads
    embedding    the embedding's backward: add.at vs bincount vs one-hot matmul vs sort + reduceat
    reductions   row sums and row maxima: NumPy's axis reductions vs BLAS and einsum
    views        a batched matmul on transposed / strided views vs a contiguous copy first
    allocator    page faults and time of a training step with and without the malloc tuning
    spinning     CPU time OpenBLAS burns after a matmul, and what it does to a second thread
    threads      a training step with the blocked loops on 1 and on 2 threads
    split        a training step with the batch on one thread (BLAS on 2) and split across 2
                 threads (BLAS on 1 in each), with Python's switch interval at its default
                 (5 ms) and at 1 ms

All experiments but the last time the step without the batch split (TrainConfig.threads=1):
they are about what happens inside one thread.

Each experiment prints a small table; ``--json`` writes them all, with the command, the
commit, the machine and the date, for the book to plot. ``--quick`` shrinks the repeats
(for CI: it checks the experiments run, not their numbers).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from .provenance import THREADS, provenance
from .train import _default_vocab, _thread_env

EXPERIMENTS = ("fusion", "matmul", "embedding", "reductions", "views", "allocator", "spinning", "threads", "split")


def _best_us(fn, repeat: int) -> float:
    """The fastest of ``repeat`` calls, in microseconds (after two warm-up calls)."""
    fn(), fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return 1e6 * best


# ------------------------------------------------------------------ matmul
_MATMUL_CODE = """
import json, time
import numpy as np, torch
torch.set_num_threads({threads})
def best(fn, repeat={repeat}):
    fn(), fn()
    b = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); b = min(b, time.perf_counter() - t0)
    return 1e6 * b
rows = []
for label, n, i, o in {shapes!r}:
    rng = np.random.default_rng(0)
    x, w, g = (rng.standard_normal(s, dtype=np.float32) for s in ((n, i), (o, i), (n, o)))
    xt, wt, gt = map(torch.from_numpy, (x, w, g))
    # the three products of a linear layer: forward x W^T, backward g W and g^T x
    np_us = best(lambda: x @ w.T) + best(lambda: g @ w) + best(lambda: g.T @ x)
    torch_us = best(lambda: xt @ wt.T) + best(lambda: gt @ wt) + best(lambda: gt.T @ xt)
    rows.append({{"case": label, "shape": [n, i, o], "NumPy (OpenBLAS)": np_us, "PyTorch": torch_us}})
print(json.dumps(rows))
"""


def matmul(repeat: int) -> dict:
    """Forward and backward products of the linear layers of configs b and c, both libraries."""
    shapes = [("b: qkv, 128 -> 384", 1024, 128, 384), ("b: attention proj, 128 -> 128", 1024, 128, 128),
              ("b: MLP up, 128 -> 512", 1024, 128, 512), ("b: MLP down, 512 -> 128", 1024, 512, 128),
              ("c: MLP up, 768 -> 3072", 1024, 768, 3072)]
    rows = _child(_MATMUL_CODE.format(threads=THREADS, repeat=repeat, shapes=shapes), {})
    return {"unit": "us for the 3 products of a linear layer", "rows": rows}


# ------------------------------------------------------------------ embedding backward
def embedding(repeat: int) -> dict:
    import numpy as np

    from ..ops.fused import embedding_backward

    rng = np.random.default_rng(0)
    rows = []
    for label, vocab, n, d in [("a: characters", 65, 768, 128), ("b: course BPE", 1024, 1024, 128),
                               ("GPT-2", 50257, 1024, 768)]:
        idx = rng.integers(0, vocab, size=n)
        g = rng.standard_normal((n, d), dtype=np.float32)

        def add_at():
            gw = np.zeros((vocab, d), dtype=g.dtype)
            np.add.at(gw, idx, g)
            return gw

        def bincount():
            return np.stack([np.bincount(idx, g[:, j], minlength=vocab) for j in range(d)], axis=1)

        def one_hot():
            oh = np.zeros((vocab, n), dtype=g.dtype)
            oh[idx, np.arange(n)] = 1.0
            return oh @ g

        def sort_reduceat():
            order = np.argsort(idx, kind="stable")
            s = idx[order]
            starts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
            gw = np.zeros((vocab, d), dtype=g.dtype)
            gw[s[starts]] = np.add.reduceat(g[order], starts, axis=0)
            return gw

        ref = add_at()
        row = {"case": label, "vocab": vocab, "ids": n, "dim": d}
        methods = {"add.at": add_at, "bincount": bincount, "one-hot matmul": one_hot, "sort + reduceat": sort_reduceat,
                   "core (embedding_backward)": lambda: embedding_backward(g, idx, vocab)}
        for name, fn in methods.items():
            if name == "one-hot matmul" and vocab * n > 2 ** 24:
                row[name] = None  # a (vocab, ids) one-hot matrix of several hundred MB: not an option
                continue
            assert np.allclose(fn(), ref, rtol=1e-4, atol=1e-4), name
            row[name] = _best_us(fn, 1 if vocab > 10_000 and name == "bincount" else repeat)
        rows.append(row)
    return {"unit": "us", "rows": rows}


# ------------------------------------------------------------------ reductions
def reductions(repeat: int) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for label, shape in [("layer norm rows, b", (1024, 128)), ("attention rows, b", (64 * 64, 64)),
                         ("attention rows, c", (48 * 256, 256)), ("logit rows, b", (1024, 1024))]:
        x = rng.standard_normal(shape, dtype=np.float32)
        ones = np.ones(shape[1], dtype=np.float32)
        per_matrix = x.reshape(-1, shape[1] * shape[1]) if shape[0] % shape[1] == 0 and shape[1] < 512 else None
        row = {"case": label, "shape": list(shape),
               "sum(axis=1)": _best_us(lambda: x.sum(axis=1), repeat),
               "x @ ones (BLAS)": _best_us(lambda: x @ ones, repeat),
               "einsum('ij->i')": _best_us(lambda: np.einsum("ij->i", x), repeat),
               "max(axis=1)": _best_us(lambda: x.max(axis=1), repeat),
               "max per matrix": None if per_matrix is None else _best_us(lambda: per_matrix.max(axis=1), repeat),
               "x * x (one pass)": _best_us(lambda: x * x, repeat)}
        rows.append(row)
    return {"unit": "us", "rows": rows}


# ------------------------------------------------------------------ views
def views(repeat: int) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for label, (B, H, T, D) in [("a", (12, 4, 64, 32)), ("c", (4, 12, 256, 64))]:
        C = H * D
        qkv = rng.standard_normal((B, T, 3 * C), dtype=np.float32)
        q, k = (a.reshape(B, T, H, D).transpose(0, 2, 1, 3) for a in np.split(qkv, 3, axis=2)[:2])
        kt = k.swapaxes(-1, -2)
        row = {"case": f"q k^T, config {label}", "shape": [B, H, T, D],
               "copy both, then matmul": _best_us(lambda: np.ascontiguousarray(q) @ np.ascontiguousarray(kt), repeat),
               "matmul on the views": _best_us(lambda: q @ kt, repeat),
               "copy k only": _best_us(lambda: q @ np.ascontiguousarray(k).swapaxes(-1, -2), repeat),
               # the core: one pass scales k and writes k^T row-major, then a product with no transposed operand
               "scaled k^T row-major (core)": _best_us(
                   lambda: q @ np.multiply(kt, 0.125, out=np.empty(kt.shape, dtype=kt.dtype)), repeat)}
        rows.append(row)
    return {"unit": "us", "rows": rows}


# ------------------------------------------------------------------ measured in subprocesses
def _child(code: str, env: dict) -> dict:
    """Run ``code`` in a fresh interpreter (BLAS and malloc read their settings at start-up)."""
    full = dict(os.environ, **_thread_env(), **env)
    proc = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"kernels bench child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


_STEP_CODE = """
import json, resource, statistics, time
from minilooped.bench.train import BenchStep
step = BenchStep({key!r}, "numpy", {vocab}, threads={threads})
for _ in range({warmup}):
    step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
times = []
for _ in range({steps}):
    t0 = time.perf_counter(); step(); times.append(time.perf_counter() - t0)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
print(json.dumps({{"ms_per_step": 1000 * statistics.median(times), "page_faults_per_step": faults / {steps}}}))
"""


def _step(key: str, env: dict | None = None, n: int = 10, warmup: int = 3, threads: int = 1, setup: str = "") -> dict:
    code = _STEP_CODE.format(key=key, vocab=_default_vocab(), steps=n, warmup=warmup, threads=threads)
    return _child(setup + code, env or {})


def use_unfused_ops() -> None:
    """Replace the fused layer norm, GELU, attention and cross-entropy of
    ``minilooped.functional`` by the chains of elementary ops a first version would write.
    Autograd differentiates the chains as it does anything else; every intermediate is
    stored and every step is a pass over memory."""
    import math

    import minilooped as ml
    import minilooped.functional as F

    def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
        xc = x - x.mean(-1, keepdim=True)
        y = xc / ((xc * xc).mean(-1, keepdim=True) + eps).sqrt()
        y = y * weight if weight is not None else y
        return y + bias if bias is not None else y

    def gelu(x, approximate="tanh"):
        return 0.5 * x * (1 + (math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)).tanh())

    def softmax(s):
        e = (s - s.max(-1, keepdim=True).detach()).exp()
        return e / e.sum(-1, keepdim=True)

    def attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
        s = (q @ k.transpose(-2, -1)) * (scale or 1 / math.sqrt(q.shape[-1]))
        if is_causal:
            L, S = s.shape[-2:]
            s = s.masked_fill(ml.backend.np.triu(ml.backend.np.ones((L, S), dtype=bool), 1), float("-inf"))
        return softmax(s) @ v

    def cross_entropy(logits, targets, ignore_index=-100, reduction="mean"):
        t = targets.data if isinstance(targets, ml.Tensor) else targets
        m = logits.max(-1, keepdim=True).detach()
        logp = logits - m - (logits - m).exp().sum(-1, keepdim=True).log()
        return -logp[ml.backend.np.arange(len(t)), t].mean()

    F.layer_norm, F.gelu, F.scaled_dot_product_attention, F.cross_entropy = layer_norm, gelu, attention, cross_entropy


def fusion(steps: int) -> dict:
    rows = []
    for key in ("a", "b", "c"):
        n = steps if key != "c" else max(2, steps // 4)
        code = _STEP_CODE.format(key=key, vocab=_default_vocab(), steps=n, warmup=2, threads=1)
        unfused = code.replace("from minilooped.bench.train import BenchStep\n",
                               "from minilooped.bench.train import BenchStep\n"
                               "from minilooped.bench.kernels import use_unfused_ops; use_unfused_ops()\n", 1)
        rows.append({"case": f"config {key}", "elementary ops": _child(unfused, {})["ms_per_step"],
                     "fused ops (core)": _child(code, {})["ms_per_step"]})
    return {"unit": "ms/step", "rows": rows}


def allocator(steps: int) -> dict:
    rows = []
    for key in ("a", "c"):
        n = steps if key == "a" else max(2, steps // 4)
        rows.append({"case": f"config {key}", "malloc as is": _step(key, {"MINILOOPED_TUNE_MALLOC": "0"}, n),
                     "tuned (core)": _step(key, {"MINILOOPED_TUNE_MALLOC": "1"}, n)})
    return {"unit": "ms/step and minor page faults/step", "rows": rows}


_SPIN_CODE = """
import json, os, time
import numpy as np
os.environ["MINILOOPED_NUM_THREADS"] = {threads!r}
import minilooped as ml
import minilooped.functional as F
a = np.random.default_rng(0).standard_normal((1024, 128), dtype=np.float32)
w = np.random.default_rng(1).standard_normal((512, 128), dtype=np.float32)
x = ml.Tensor(np.random.default_rng(2).standard_normal((1024, 512), dtype=np.float32))
def gelu_after(pre):
    best = float("inf")
    for _ in range({repeat}):
        pre(); t0 = time.perf_counter(); F.gelu(x); best = min(best, time.perf_counter() - t0)
    return 1e6 * best
alone = gelu_after(lambda: None)  # before any matrix product: BLAS's threads are asleep
a @ w.T
c0 = time.process_time(); time.sleep(0.2); burnt = time.process_time() - c0
print(json.dumps({{"cpu_s_in_0.2s_sleep": burnt, "gelu_alone_us": alone,
                   "gelu_after_matmul_us": gelu_after(lambda: a @ w.T)}}))
"""


def spinning(repeat: int) -> dict:
    rows = []
    for label, env, threads in [("OpenBLAS as is, blocked loops on 1 thread", {}, "1"),
                                ("OpenBLAS as is, blocked loops on 2 threads", {}, "2"),
                                ("OPENBLAS_THREAD_TIMEOUT=4, 2 threads", {"OPENBLAS_THREAD_TIMEOUT": "4"}, "2")]:
        r = _child(_SPIN_CODE.format(threads=threads, repeat=repeat), env)
        rows.append({"case": label, **r})
    return {"unit": "CPU seconds, us", "rows": rows}


def threads(steps: int, rounds: int = 3) -> dict:
    """A step on 1 and 2 threads of the blocked loops. The differences are a few percent, the
    size of the noise of one run on a shared machine: each variant runs ``rounds`` times,
    taking turns, and the fastest median is kept."""
    variants = {"1 thread(s)": {"MINILOOPED_NUM_THREADS": "1"},
                "2 thread(s)": {"MINILOOPED_NUM_THREADS": "2"},
                # OpenBLAS's workers asleep at once: the second thread is free, every product wakes them
                "2 threads, OPENBLAS_THREAD_TIMEOUT=4": {"MINILOOPED_NUM_THREADS": "2", "OPENBLAS_THREAD_TIMEOUT": "4"}}
    return _fastest_steps({name: dict(env=env) for name, env in variants.items()}, steps, rounds)


def _fastest_steps(variants: dict, steps: int, rounds: int) -> dict:
    """ms/step of configs a, b, c under each variant (keyword arguments of ``_step``): the
    variants take turns ``rounds`` times and the fastest median of each is kept."""
    rows = []
    for key in ("a", "b", "c"):
        n = steps if key != "c" else max(2, steps // 2)
        best = {}
        for _ in range(rounds):
            for name, kw in variants.items():
                ms = _step(key, n=n, **kw)["ms_per_step"]
                best[name] = min(best.get(name, ms), ms)
        rows.append({"case": f"config {key}", **best})
    return {"unit": "ms/step (fastest median of the rounds)", "rows": rows}


def split(steps: int, rounds: int = 3) -> dict:
    """A step with the batch on one thread (BLAS on 2 threads) and split across 2 threads
    (training/threads.py), the latter also with Python's switch interval (how long a thread
    waiting for the global lock lets the holder run before asking for it) cut from 5 to 1 ms;
    fastest median of ``rounds`` runs taking turns."""
    short = "import sys; sys.setswitchinterval(0.001)\n"
    variants = {"1 thread, BLAS on 2": dict(threads=1),
                "2 threads (core)": dict(threads=2),
                "2 threads, switch interval 1 ms": dict(threads=2, setup=short)}
    return _fastest_steps(variants, steps, rounds)


# ------------------------------------------------------------------ driver
def _table(name: str, result: dict) -> str:
    rows = result["rows"]
    keys = [k for k in rows[0] if k not in ("case",)]
    out = [f"{name} ({result['unit']})"]
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k)
            if isinstance(v, dict):
                v = ", ".join(f"{kk} {vv:.1f}" for kk, vv in v.items())
            elif isinstance(v, float):
                v = f"{v:.1f}" if v >= 1 or v == 0 else f"{v:.3f}"
            cells.append(f"{k}: {v}")
        out.append(f"  {r['case']:<40} " + " | ".join(cells))
    return "\n".join(out)


def main(argv=None) -> None:
    argv = list(sys.argv[2:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m minilooped.bench kernels", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(EXPERIMENTS), help="comma-separated subset of " + ", ".join(EXPERIMENTS))
    ap.add_argument("--repeat", type=int, default=50, help="timed calls per micro-benchmark (the fastest is kept)")
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per process (median kept)")
    ap.add_argument("--quick", action="store_true", help="few repeats: checks that everything runs (CI)")
    ap.add_argument("--json", default=None, help="also write the results, with their provenance, to this file")
    args = ap.parse_args(argv)
    only = [e.strip() for e in args.only.split(",") if e.strip()]
    bad = [e for e in only if e not in EXPERIMENTS]
    if bad:
        raise SystemExit(f"unknown experiment(s) {bad}: choose from {', '.join(EXPERIMENTS)}")
    for var, value in _thread_env().items():
        os.environ.setdefault(var, value)
    repeat, steps = (3, 2) if args.quick else (args.repeat, args.steps)
    runners = {"fusion": lambda: fusion(steps), "matmul": lambda: matmul(repeat), "embedding": lambda: embedding(repeat), "reductions": lambda: reductions(repeat),
               "views": lambda: views(repeat), "allocator": lambda: allocator(steps),
               "spinning": lambda: spinning(repeat), "threads": lambda: threads(steps, 1 if args.quick else 3),
               "split": lambda: split(steps, 1 if args.quick else 3)}
    report = {"provenance": provenance(["kernels", *argv]), "quick": args.quick}
    for name in only:
        report[name] = runners[name]()
        print(_table(name, report[name]), flush=True)
    if args.json:
        from ..atomic import atomic_write_json

        atomic_write_json(args.json, report)
        print(f"wrote {args.json}")
