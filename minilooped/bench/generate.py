"""`python -m minilooped.bench generate`: tokens per second of generation, core, mirror and transformers.

Greedy generation of ``--new`` tokens (32) after a prompt of random token ids, by the core
(``GPT.generate``), the mirror, and Hugging Face transformers' ``GPT2LMHeadModel.generate``
(its own KV cache; random weights, no download), with and without the KV cache
(models/kv_cache.py), at each prompt length (64 and 512). Models, float32, random weights:

    gpt2-124m           GPT-2 small: the core and the mirror against transformers
    loop-residual-81m   6 blocks looped 6 times (36 block applications per token): the core
                        and the mirror (transformers has no looped GPT-2)

tokens/s = new tokens / wall time of the whole ``generate`` call, the prompt's forward pass
included, after one untimed warm-up call; each row is measured ``--repeat`` times (3), in
fresh processes taking turns, and the fastest is kept. Without the cache
each token recomputes the whole prefix, so those runs generate ``--uncached_new`` tokens
(8) instead. Every implementation runs in its own process with 2 threads (OMP, OpenBLAS,
MKL and torch). The ratio reported is transformers' tokens/s over the implementation's,
for the 124M model (1.0 = as fast as transformers; lower is faster). ``--quick``: tiny
models and short prompts, for the tests (seconds; its timings mean nothing).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from .provenance import THREADS

MODELS = {"gpt2-124m": {}, "loop-residual-81m": {}}
QUICK = {  # tiny stand-ins, for the tests
    "tiny-gpt2": dict(n_layer=2, n_head=4, n_embd=64, vocab_size=256, block_size=128),
    "tiny-loop-residual": dict(variant="loop_residual", n_layer=2, n_loops=2, n_head=4, n_embd=64,
                               vocab_size=256, block_size=128),
}
IMPLS = ("core", "mirror", "transformers")


def _thread_env(n: int = THREADS) -> dict:
    return {"OMP_NUM_THREADS": str(n), "OPENBLAS_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}


def model_config(key: str):
    from ..models import GPTConfig

    return GPTConfig(**QUICK[key]) if key in QUICK else GPTConfig.from_preset(key)


def build(impl: str, key: str):
    """(generate(idx, n, use_cache) -> None, the model's config) for one implementation."""
    import numpy as np

    config = model_config(key)
    if impl == "core":
        import minilooped as ml
        from ..models import GPT

        ml.manual_seed(0)
        model = GPT(config)
        return (lambda idx, n, cache: model.generate(idx, n, temperature=0, use_cache=cache)), config
    import torch

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    if impl == "mirror":
        from ..torch.models import GPT

        model = GPT(config)
        return (lambda idx, n, cache: model.generate(torch.from_numpy(idx), n, temperature=0,
                                                     use_cache=cache)), config
    if config.variant != "gpt2":
        raise ValueError(f"transformers has no {config.variant!r} model; compare it on GPT-2 only.")
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = GPT2LMHeadModel(GPT2Config(vocab_size=config.vocab_size, n_positions=config.block_size,
                                    n_embd=config.n_embd, n_layer=config.n_layer, n_head=config.n_head)).eval()

    def generate(idx, n, cache):
        x = torch.from_numpy(np.ascontiguousarray(idx))
        with torch.no_grad():
            hf.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n,
                        min_new_tokens=n, use_cache=cache, pad_token_id=0)
    return generate, config


def worker(impl: str, key: str, prompts, new: int, uncached_new: int, repeat: int, caches=(True, False)) -> list:
    import numpy as np

    generate, config = build(impl, key)
    rows = []
    for T in prompts:
        idx = np.random.default_rng(T).integers(0, config.vocab_size, (1, T))
        for cache in caches:
            n = new if cache else uncached_new
            generate(idx, 1, cache)  # warm-up: first calls allocate, load kernels
            best = float("inf")
            for _ in range(repeat):
                t0 = time.perf_counter()
                generate(idx, n, cache)
                best = min(best, time.perf_counter() - t0)
            rows.append({"model": key, "impl": impl, "prompt": T, "cache": cache, "new_tokens": n,
                         "seconds": best, "tokens_per_s": n / best})
    return rows


def _subprocess(args: dict) -> list:
    env = dict(os.environ, **_thread_env())
    proc = subprocess.run([sys.executable, "-m", "minilooped.bench.generate", "--worker", json.dumps(args)],
                          env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"bench worker {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(models, prompts, new=32, uncached_new=8, repeat=3, impls=IMPLS, caches=(True, False), log=print) -> dict:
    """Every (model, implementation), ``repeat`` times in fresh processes taking turns, so
    that a shared machine's load falls on all alike; the fastest call of each row is kept."""
    load = [round(os.getloadavg()[0], 2)]
    best: dict = {}
    for i in range(repeat):
        for key in models:
            for impl in impls:
                if impl == "transformers" and model_config(key).variant != "gpt2":
                    continue
                rows = _subprocess(dict(impl=impl, key=key, prompts=list(prompts), new=new,
                                        uncached_new=uncached_new, repeat=1, caches=list(caches)))
                for r in rows:
                    row = (key, impl, r["prompt"], r["cache"])
                    if row not in best or r["seconds"] < best[row]["seconds"]:
                        best[row] = r
                    log(f"  {key} {impl:>12} prompt {r['prompt']:>4} {'cache' if r['cache'] else 'no cache':>8}: "
                        f"{r['tokens_per_s']:.2f} tokens/s (run {i + 1})")
    results = list(best.values())
    load.append(round(os.getloadavg()[0], 2))
    hf = {(r["model"], r["prompt"]): r["tokens_per_s"] for r in results
          if r["impl"] == "transformers" and r["cache"]}
    for r in results:  # transformers' tokens/s (with its cache) over this one's: <= 1.0 is as fast or faster
        base = hf.get((r["model"], r["prompt"]))
        r["ratio_vs_transformers"] = None if base is None else base / r["tokens_per_s"]
    return {"threads": THREADS, "results": results, "repeat": repeat, "new_tokens": new,
            "uncached_new_tokens": uncached_new, "load_average_before_after": load}


def format_table(report: dict) -> str:
    head = f"{'model':<20}{'impl':<14}{'prompt':>7}{'cache':>7}{'new':>5}{'tokens/s':>10}{'vs transformers':>17}"
    lines = [head, "-" * len(head)]
    for r in report["results"]:
        ratio = r["ratio_vs_transformers"]
        lines.append(f"{r['model']:<20}{r['impl']:<14}{r['prompt']:>7}{'yes' if r['cache'] else 'no':>7}"
                     f"{r['new_tokens']:>5}{r['tokens_per_s']:>10.2f}" + (f"{ratio:>16.2f}x" if ratio else ""))
    lines.append("vs transformers: transformers' tokens/s with its cache over this row's (<= 1.0: as fast or "
                 f"faster); greedy, float32, {report['threads']} threads, best of {report['repeat']}")
    lo = report["load_average_before_after"]
    lines.append(f"1-minute load average before/after: {lo[0]} / {lo[1]} (above {os.cpu_count()}: the CPU was "
                 "shared and the times are slower than on an idle machine)")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m minilooped.bench generate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated presets (default: %(default)s)")
    ap.add_argument("--prompts", default="64,512", help="prompt lengths, comma-separated")
    ap.add_argument("--new", type=int, default=32, help="new tokens with the cache")
    ap.add_argument("--uncached_new", type=int, default=8, help="new tokens without the cache (slow)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per row, taking turns; the fastest kept")
    ap.add_argument("--impls", default=",".join(IMPLS), help="comma-separated subset of %(default)s")
    ap.add_argument("--cache", default="yes,no", help="with the KV cache, without, or both (%(default)s)")
    ap.add_argument("--quick", action="store_true", help="tiny models, prompts 8 and 32, 4 tokens: for tests")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(**json.loads(args.worker))))
        return
    if args.quick:
        models, prompts, new, uncached, repeat = list(QUICK), [8, 32], 4, 2, 1
    else:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        prompts = [int(p) for p in args.prompts.split(",")]
        new, uncached, repeat = args.new, args.uncached_new, args.repeat
    impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    bad = [i for i in impls if i not in IMPLS]
    if bad:
        raise SystemExit(f"unknown implementation(s) {bad}: choose from {', '.join(IMPLS)}")
    for key in models:
        model_config(key)  # an unknown preset fails here, with the list of known ones
    caches = [{"yes": True, "no": False}[c.strip()] for c in args.cache.split(",") if c.strip()]
    report = run(models, prompts, new, uncached, repeat, impls, caches)
    print(format_table(report))
    if args.json:
        from ..atomic import atomic_write_json
        from .provenance import provenance

        atomic_write_json(args.json, {"provenance": provenance(["generate", *(argv if argv is not None else sys.argv[2:])]),
                                      **report})


if __name__ == "__main__":
    main()
