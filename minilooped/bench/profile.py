"""`python -m minilooped.bench profile`: where the time of one core training step goes.

``bench train`` says how much slower than PyTorch the core is; this says why. It times
every call of every registered op (its forward, and its backward closure when the engine
runs it) on a bench config's training step, and prints a table of milliseconds per step
by op, next to what is not an op:

    model code     the forward pass outside the ops (Python in the modules)
    engine         backward() outside the ops' backward closures (graph walk, gradient sums)
    clip, AdamW    the optimiser's side of the step
    other          batch, loss.item(), zero_grad

The step profiled is the one without the batch split (TrainConfig.threads = 1, BLAS on 2
threads): with it, two shards run at once and no per-op timer would be meaningful; the split
itself is measured by ``bench kernels`` (batch split). Times are exclusive: an op called
inside another op (rare) counts once, for itself. The
profile is measured by wrapping each op in a Python function, which adds ~1 us per call;
the bench's own ``ms/step`` (without wrappers) remains the reference figure. With
``--torch`` the mirror's step is profiled too, by ``torch.profiler`` (self CPU time of
its top-level aten ops), for a side-by-side reading.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict

from .train import CONFIGS, THREADS, BenchStep, _default_vocab


class OpTimer:
    """Wraps the registered ops (forward and backward) with exclusive wall-clock timers."""

    def __init__(self):
        self.fwd = defaultdict(float)
        self.bwd = defaultdict(float)
        self.calls = defaultdict(int)
        self._stack = []  # child-time accumulators of the ops being timed
        self._undo = []

    def _timed(self, name, fn, table, count: bool = False):
        stack, calls = self._stack, self.calls

        def wrapper(*args, **kwargs):
            if count:
                calls[name] += 1
            stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                children = stack.pop()
                table[name] += dt - children
                if stack:
                    stack[-1] += dt
        return wrapper

    def install(self):
        from ..ops.registry import OPS
        from ..tensor import Tensor

        by_id = {id(fn): name for name, fn in OPS.items()}
        # every module of the library that holds an op under some name, and the Tensor methods
        owners = [mod for name, mod in list(sys.modules.items())
                  if mod is not None and (name == "minilooped" or name.startswith("minilooped."))] + [Tensor]
        for owner in owners:
            for attr, value in list(vars(owner).items()):
                if callable(value) and id(value) in by_id:
                    name = by_id[id(value)]
                    self._patch(owner, attr, value, self._timed(name, value, self.fwd, count=True))
        original_make = Tensor._make
        timer = self

        def _make(data, parents, backward, op):
            if backward is not None:
                backward = timer._timed(op, backward, timer.bwd)
            return original_make(data, parents, backward, op)
        self._patch(Tensor, "_make", Tensor.__dict__["_make"], staticmethod(_make))
        return self

    def _patch(self, owner, attr, old, new):
        setattr(owner, attr, new)
        self._undo.append((owner, attr, old))

    def uninstall(self):
        for owner, attr, old in reversed(self._undo):
            setattr(owner, attr, old)
        self._undo.clear()

    def reset(self):
        self.fwd.clear(), self.bwd.clear(), self.calls.clear()


def profile_core(key: str, vocab: int, steps: int = 10, warmup: int = 3) -> dict:
    """Milliseconds per step of the core's training step on bench config ``key``, by part."""
    # one thread for the batch (BLAS keeps its 2): with the batch split, two ops would run at
    # once and a wall-clock timer per op would count the other thread's work too
    bench = BenchStep(key, "numpy", vocab, threads=1)
    engine, cfg, dist = bench.engine, bench.cfg, bench.dist
    timer = OpTimer().install()
    parts = defaultdict(float)
    try:
        for i in range(warmup + steps):
            if i == warmup:
                timer.reset(), parts.clear()
            t0 = time.perf_counter()
            x, y = bench.batch()
            xt, yt = engine._tensor(x), engine._tensor(y)
            t1 = time.perf_counter()
            _, loss = engine.model(xt, yt)
            t2 = time.perf_counter()
            loss.backward()
            t3 = time.perf_counter()
            engine._loss_sum += loss.item()
            engine._micro += 1
            engine.collect_loss(dist)
            t4 = time.perf_counter()
            engine.clip_grad_norm(cfg.grad_clip)
            t5 = time.perf_counter()
            engine.optimizer.step()
            t6 = time.perf_counter()
            engine.optimizer.zero_grad(set_to_none=True)
            t7 = time.perf_counter()
            parts["forward"] += t2 - t1
            parts["backward"] += t3 - t2
            parts["clip"] += t5 - t4
            parts["AdamW"] += t6 - t5
            parts["other"] += (t1 - t0) + (t4 - t3) + (t7 - t6)
    finally:
        timer.uninstall()
    ms = lambda s: 1000 * s / steps  # noqa: E731
    ops = {name: {"forward": ms(timer.fwd.get(name, 0.0)), "backward": ms(timer.bwd.get(name, 0.0)),
                  "calls": timer.calls.get(name, 0) // steps}
           for name in set(timer.fwd) | set(timer.bwd)}
    fwd_ops = sum(o["forward"] for o in ops.values())
    bwd_ops = sum(o["backward"] for o in ops.values())
    return {"config": key, "ops": ops, "model code": ms(parts["forward"]) - fwd_ops,
            "engine": ms(parts["backward"]) - bwd_ops, "clip": ms(parts["clip"]), "AdamW": ms(parts["AdamW"]),
            "other": ms(parts["other"]), "total": ms(sum(parts.values()))}


def profile_torch(key: str, vocab: int, steps: int = 10, warmup: int = 3) -> dict:
    """The mirror's step under torch.profiler: ms per step of self CPU time by aten op."""
    import torch

    step = BenchStep(key, "torch", vocab)
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    total = time.perf_counter() - t0
    ops = {e.key: {"self_ms": e.self_cpu_time_total / 1000 / steps, "calls": e.count // steps}
           for e in prof.key_averages() if e.self_cpu_time_total > 0}
    return {"config": key, "ops": ops, "total": 1000 * total / steps}


def format_core(p: dict, top: int = 25) -> str:
    rows = sorted(p["ops"].items(), key=lambda kv: -(kv[1]["forward"] + kv[1]["backward"]))
    head = f"{'op':<32}{'calls':>7}{'forward':>10}{'backward':>10}{'total':>9}{'share':>8}"
    out = [f"core training step, config {p['config']} ({CONFIGS[p['config']]['label']}): ms per step", head,
           "-" * len(head)]
    total = p["total"]
    for name, o in rows[:top]:
        t = o["forward"] + o["backward"]
        out.append(f"{name:<32}{o['calls']:>7}{o['forward']:>10.2f}{o['backward']:>10.2f}{t:>9.2f}{t / total:>8.1%}")
    rest = rows[top:]
    if rest:
        t = sum(o["forward"] + o["backward"] for _, o in rest)
        out.append(f"{f'({len(rest)} more ops)':<32}{'':>7}{'':>10}{'':>10}{t:>9.2f}{t / total:>8.1%}")
    for name in ("model code", "engine", "clip", "AdamW", "other"):
        out.append(f"{name:<32}{'':>7}{'':>10}{'':>10}{p[name]:>9.2f}{p[name] / total:>8.1%}")
    out.append(f"{'total (with the timers)':<32}{'':>7}{'':>10}{'':>10}{total:>9.2f}")
    return "\n".join(out)


def format_torch(p: dict, top: int = 25) -> str:
    rows = sorted(p["ops"].items(), key=lambda kv: -kv[1]["self_ms"])
    head = f"{'aten op':<40}{'calls':>7}{'self ms':>10}"
    out = [f"mirror training step, config {p['config']}: self CPU ms per step (torch.profiler)", head, "-" * len(head)]
    for name, o in rows[:top]:
        out.append(f"{name[:39]:<40}{o['calls']:>7}{o['self_ms']:>10.2f}")
    out.append(f"{'total (with the profiler)':<40}{'':>7}{p['total']:>10.2f}")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m minilooped.bench profile", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="a", help="one of a, b, b-char, c (see python -m minilooped.bench train -h)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--top", type=int, default=25, help="rows to show")
    ap.add_argument("--torch", action="store_true", help="also profile the PyTorch mirror")
    ap.add_argument("--json", default=None, help="also write the profile(s) to this JSON file")
    args = ap.parse_args(argv)
    if args.config not in CONFIGS:
        raise SystemExit(f"unknown bench config {args.config!r}: choose from {', '.join(CONFIGS)}")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(var) != str(THREADS):
            # BLAS reads these when it loads: rerun this process with them set
            env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), OPENBLAS_NUM_THREADS=str(THREADS),
                       MKL_NUM_THREADS=str(THREADS))
            os.execve(sys.executable, [sys.executable, "-m", "minilooped.bench", "profile", *(argv or sys.argv[2:])],
                      env)
    vocab = _default_vocab()
    report = {"core": profile_core(args.config, vocab, args.steps, args.warmup)}
    print(format_core(report["core"], args.top))
    if args.torch:
        report["torch"] = profile_torch(args.config, vocab, args.steps, args.warmup)
        print()
        print(format_torch(report["torch"], args.top))
    if args.json:
        from ..atomic import atomic_write_json
        from .provenance import provenance

        atomic_write_json(args.json, {"provenance": provenance(["profile", *(argv if argv is not None else sys.argv[2:])]),
                                      **report})
