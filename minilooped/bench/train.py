"""`python -m minilooped.bench train`: one training step of the core and of the mirror, timed.

For each config, each implementation runs in a fresh process with 2 threads (OMP, OpenBLAS,
MKL and torch), warms up, then times ``--steps`` training steps exactly as the training
loop makes them (batch, forward, backward, clipping, AdamW). Each uses its 2 threads as the
training loop does: the mirror inside every op (torch's intra-op threads), the core by
splitting each batch between them (TrainConfig.threads = 0: as many as BLAS has; see
minilooped/training/threads.py). Reported per run:

    ms/step      median wall time of one step
    tokens/s     batch_size * block_size / (ms/step)
    GFLOP/s      flops_per_token * tokens/s, with PaLM's 6 N + 12 L H Q T per token
                 (minilooped.training.mfu: N and L count every use of a looped block)
    peak MB      peak resident set size (RSS) during the timed steps minus the RSS before the
                 model was built: weights, gradients, AdamW state, activations and whatever
                 the allocator holds (Linux: the high-water mark VmHWM, reset after warmup;
                 elsewhere ru_maxrss)

and the ratio core / mirror of ms/step (1.0 = as fast as PyTorch; lower is better). With
``--repeat N`` each pair is measured N times, taking turns, and the fastest run is kept. The
machine's float32 matmul peak (a 2048 x 2048 NumPy matmul, best of 5, same threads) is
printed as the ceiling to compare GFLOP/s against.

Configs (issue 7):
    a   nanoGPT's CPU shape: 4 layers, 4 heads, n_embd 128, block 64, batch 12, characters (65)
    b   the course's default, shakespeare-loop-residual (its config's batch and block), with
        the vocabulary of the course's from-scratch BPE (TrainConfig.bpe_vocab_size, 1024)
    b-char  the same with the character vocabulary the default config ships with (80)
    c   n_embd 768, 12 heads, block 256, batch 4, 1 block x 2 loops (Loop-Residual 45M's block),
        with the default's vocabulary
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time

from .provenance import THREADS  # 2, the budget

CONFIGS = {
    "a": dict(label="nanoGPT CPU shape (4L, 128, T64, B12, V65)", model="shakespeare-gpt2", batch_size=12,
              model_args=dict(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65)),
    "b": dict(label="default shakespeare-loop-residual, the course's BPE vocabulary", default=True, vocab="bpe"),
    "b-char": dict(label="default shakespeare-loop-residual as shipped, character vocabulary", default=True),
    "c": dict(label="768 wide, 1 block x 2 loops, T256, B4", model="loop-residual-45m", batch_size=4,
              model_args=dict(n_layer=1, n_loops=2, n_head=12, n_embd=768, block_size=256)),
}


def _thread_env(n: int = THREADS) -> dict:
    return {"OMP_NUM_THREADS": str(n), "OPENBLAS_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}


@functools.lru_cache(maxsize=None)
def _default_vocab() -> int:
    """The vocabulary of the default config's data (prepared once if needed)."""
    from ..data import read_meta
    from ..training import load_config
    from ..training.run_data import ensure_prepared

    return read_meta(ensure_prepared(load_config(), log=lambda *a: None))["vocab_size"]


def train_config(key: str, backend: str, vocab: int, threads: int = 0):
    """The TrainConfig of bench config ``key`` for ``backend``; ``threads`` as TrainConfig.threads."""
    from ..training import TrainConfig, load_config

    spec = CONFIGS[key]
    if spec.get("default"):
        cfg = load_config()
        # the from-scratch BPE's vocabulary size (training it takes minutes; the bench's token
        # ids are random, so only the size matters), or the shipped tokenizer's
        args = dict(cfg.model_args, vocab_size=cfg.bpe_vocab_size if spec.get("vocab") == "bpe" else vocab)
        return TrainConfig(**{**cfg.to_dict(), "backend": backend, "model_args": args, "progress": False,
                              "threads": threads})
    args = dict(spec["model_args"])
    args.setdefault("vocab_size", vocab)
    return TrainConfig(name=f"bench-{key}", model=spec["model"], model_args=args, batch_size=spec["batch_size"],
                       backend=backend, progress=False, threads=threads)


# ---------------------------------------------------------------------- the measured process
def _rss_kb(field: str) -> int | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class BenchStep:
    """The engine of bench config ``key`` on ``backend``, and one training step made exactly as
    the training loop makes it (batch, forward, backward, clipping, AdamW), on random token
    ids: speed does not depend on them. Shared by ``bench train``, ``profile`` and ``kernels``."""

    def __init__(self, key: str, backend: str, vocab: int, threads: int = 0):
        import numpy as np

        from .. import backend as core_backend
        from ..training.ddp import DistInfo
        from ..training.loop import make_engine

        core_backend.tune_allocator()  # as training does, for both implementations (backend.py)
        if backend == "torch":
            import torch

            torch.set_num_threads(THREADS)
        self.cfg = train_config(key, backend, vocab, threads)
        self.model_config = self.cfg.model_config()
        self.dist = DistInfo(device=self.cfg.resolved_device())
        self.engine = make_engine(self.cfg, self.model_config, self.dist)
        self._rng = np.random.default_rng(0)
        self._tokens = self._rng.integers(0, self.model_config.vocab_size, size=100_000)

    def batch(self):
        from ..data import get_batch

        return get_batch(self._tokens, self.cfg.batch_size, self.model_config.block_size, self._rng)

    def __call__(self) -> None:
        x, y = self.batch()
        self.engine.forward_backward(x, y, None, scale=1.0, sync=True)
        self.engine.collect_loss(self.dist)
        self.engine.clip_grad_norm(self.cfg.grad_clip)
        self.engine.optimizer_step(self.cfg.learning_rate)


def worker(key: str, backend: str, vocab: int, steps: int, warmup: int, threads: int = 0) -> dict:
    import resource

    from ..training.loop import make_engine  # noqa: F401  (load the libraries before the baseline RSS)
    from ..training.mfu import flops_per_token

    base_kb = _rss_kb("VmRSS") or 0  # the libraries are loaded, the model not yet built
    step = BenchStep(key, backend, vocab, threads)
    mc, engine = step.model_config, step.engine
    B, T = step.cfg.batch_size, mc.block_size
    for _ in range(warmup):
        step()
    can_reset = _reset_peak_rss()  # the high-water mark now starts from the RSS after warmup
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak_kb = _rss_kb("VmHWM") if can_reset else None
    if peak_kb is None:  # no resettable high-water mark: the lifetime maximum (warmup included)
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ms = 1000 * statistics.median(times)
    tok_s = B * T / (ms / 1000)
    fpt = flops_per_token(mc, engine.named_numels())
    return {"config": key, "backend": backend, "ms_per_step": ms, "tokens_per_s": tok_s,
            "gflops": fpt * tok_s / 1e9, "flops_per_token": fpt, "peak_mb": max(0, peak_kb - base_kb) / 1024,
            "params": sum(n for name, n in engine.named_numels() if not name.startswith("transformer.wpe")),
            "batch_size": B, "block_size": T, "steps": steps, "warmup": warmup,
            "batch_threads": getattr(engine, "threads", None)}  # the core's batch split (None: torch)


def matmul_peak(n: int = 2048, repeat: int = 5) -> float:
    """GFLOP/s of the best of ``repeat`` n x n float32 NumPy matmuls (2 n^3 FLOPs each)."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(repeat))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------- the driver
def _subprocess(args: list[str]) -> dict:
    env = dict(os.environ, **_thread_env())
    proc = subprocess.run([sys.executable, "-m", "minilooped.bench.train", *args], env=env, capture_output=True,
                          text=True)
    if proc.returncode:
        raise RuntimeError(f"bench worker {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(configs, backends=("numpy", "torch"), steps: int = 10, warmup: int = 3, repeat: int = 1, log=print,
        threads: int = 0) -> dict:
    """Measure every (config, backend); with ``repeat`` > 1 each is measured that many times,
    in fresh processes taking turns, and the fastest is kept (a shared machine only ever
    makes a run slower). ``threads``: TrainConfig.threads of the core (0: split the batch
    across BLAS's threads, as training does; 1: no split, BLAS on its 2 threads)."""
    vocab = _default_vocab()
    load = [round(os.getloadavg()[0], 2)]
    peak = max(_subprocess(["--worker-matmul"])["gflops"] for _ in range(repeat))
    log(f"float32 matmul peak (2048 x 2048 NumPy, {THREADS} threads): {peak:.1f} GFLOP/s")
    best: dict = {}
    for i in range(repeat):
        for key in configs:
            for backend in backends:
                r = _subprocess(["--worker", json.dumps(dict(key=key, backend=backend, vocab=vocab, steps=steps,
                                                             warmup=warmup, threads=threads))])
                r["label"] = CONFIGS[key]["label"]
                if (key, backend) not in best or r["ms_per_step"] < best[key, backend]["ms_per_step"]:
                    best[key, backend] = r
                log(f"  {key} {backend:>5}: {r['ms_per_step']:.1f} ms/step" + (f" (run {i + 1})" if repeat > 1 else ""))
    results = [best[key, backend] for key in configs for backend in backends]
    load.append(round(os.getloadavg()[0], 2))
    ratios = {}
    for key in configs:
        by = {r["backend"]: r for r in results if r["config"] == key}
        if "torch" in by and any(b in by for b in ("numpy", "cupy")):
            core = by.get("numpy") or by.get("cupy")
            ratios[key] = core["ms_per_step"] / by["torch"]["ms_per_step"]
    return {"threads": THREADS, "core_batch_threads": threads, "matmul_peak_gflops": peak, "results": results, "ratio_core_over_mirror": ratios,
            "repeat": repeat, "load_average_before_after": load,
            "flops_formula": "6 N + 12 L H Q T per token (PaLM, appendix B); N, L count every use of a looped block"}


def format_table(report: dict) -> str:
    head = f"{'config':<7}{'impl':<7}{'ms/step':>10}{'tokens/s':>11}{'GFLOP/s':>9}{'peak MB':>9}{'core/mirror':>13}"
    lines = [head, "-" * len(head)]
    for r in report["results"]:
        ratio = report["ratio_core_over_mirror"].get(r["config"]) if r["backend"] != "torch" else None
        lines.append(f"{r['config']:<7}{r['backend']:<7}{r['ms_per_step']:>10.1f}{r['tokens_per_s']:>11.0f}"
                     f"{r['gflops']:>9.2f}{r['peak_mb']:>9.1f}" + (f"{ratio:>12.2f}x" if ratio else ""))
    lines.append(f"machine float32 matmul peak: {report['matmul_peak_gflops']:.1f} GFLOP/s ({report['threads']} threads); "
                 f"GFLOP/s from {report['flops_formula']}")
    lo = report.get("load_average_before_after")
    if lo:
        lines.append(f"1-minute load average before/after: {lo[0]} / {lo[1]} (above {os.cpu_count()}: the CPU was shared "
                     f"and times are slower than on an idle machine); best of {report['repeat']} run(s)")
    for key in dict.fromkeys(r["config"] for r in report["results"]):
        lines.append(f"  {key}: {CONFIGS[key]['label']}")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m minilooped.bench train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="a,b,b-char,c", help="comma-separated subset of a,b,b-char,c (see the module docstring)")
    ap.add_argument("--backends", default="numpy,torch", help="numpy, torch, cupy (comma-separated)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--repeat", type=int, default=1, help="measure each pair this many times, keep the fastest")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--threads", type=int, default=0,
                    help="the core's batch split (TrainConfig.threads): 0 = as training does, 1 = none")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-matmul", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from .. import backend

    backend.tune_allocator()  # the workers too: training tunes malloc (backend.py), so the bench does
    if args.worker_matmul:
        print(json.dumps({"gflops": matmul_peak()}))
        return
    if args.worker:
        print(json.dumps(worker(**json.loads(args.worker))))
        return
    configs = [c.strip() for c in args.config.split(",") if c.strip()]
    bad = [c for c in configs if c not in CONFIGS]
    if bad:
        raise SystemExit(f"unknown bench config(s) {bad}: choose from {', '.join(CONFIGS)}")
    report = run(configs, [b.strip() for b in args.backends.split(",")], args.steps, args.warmup, args.repeat,
                 threads=args.threads)
    print(format_table(report))
    if args.json:
        from ..atomic import atomic_write_json
        from .provenance import provenance

        atomic_write_json(args.json, {"provenance": provenance(["train", *(argv if argv is not None else sys.argv[2:])]),
                                      **report})


if __name__ == "__main__":
    main()
