"""How far the last-loop KV cache drifts from the exact one (models/kv_cache.py).

    python scripts/kv_cache_drift.py runs/shakespeare-fully-looped --n_loops 1 2 4 8

The Fully Looped Transformer's authors keep only the last loop's keys and values when
they generate (cache_mode="last_loop"); the exact cache keeps every loop's. For a trained
checkpoint, in float64 (so that rounding plays no part), and for each loop count:

- tokens: greedy generation from ``--prompts`` random prompts of ``--prompt_len`` tokens up
  to block_size, with each cache; the new tokens that differ (once a row differs, what
  follows it usually differs too) and the first new token that differs in each row;
- logits: the exact cache's tokens fed to both caches (teacher forcing), and the largest
  difference of the next-token logits, overall and on average over the steps, with the
  share of steps whose argmax agrees.
"""
from __future__ import annotations

import argparse

import numpy as np


def drift(model, prompts, n_loops=None):
    import minilooped as ml
    from minilooped.models.kv_cache import KVCache

    kw = {} if n_loops is None else {"n_loops": n_loops}
    bs, P = model.config.block_size, prompts.shape[1]
    exact = np.asarray(model.generate(prompts, bs - P, temperature=0, **kw))
    approx = np.asarray(model.generate(prompts, bs - P, temperature=0, cache_mode="last_loop", **kw))
    differ = exact[:, P:] != approx[:, P:]
    logits = {}
    with ml.no_grad():
        for mode in ("exact", "last_loop"):  # the same tokens (the exact run's) through both caches
            cache = KVCache(bs, mode)
            out = [model(exact[:, :P], cache=cache, **kw)[0].numpy()[:, -1]]
            for t in range(P, bs - 1):
                out.append(model(exact[:, t:t + 1], cache=cache, **kw)[0].numpy()[:, -1])
            logits[mode] = np.array(out)  # (steps, B, vocab)
    d = np.abs(logits["last_loop"] - logits["exact"]).max(axis=-1)  # (steps, B)
    return {"n_loops": n_loops or model.config.n_loops, "tokens_differing": int(differ.sum()),
            "tokens": int(differ.size), "first_difference": [int(r.argmax()) if r.any() else None for r in differ],
            "max_logit_diff": float(d.max()), "mean_step_max_logit_diff": float(d.max(axis=1).mean()),
            "max_abs_logit": float(np.abs(logits["exact"]).max()),
            "argmax_agreement": float(np.mean(logits["last_loop"].argmax(-1) == logits["exact"].argmax(-1)))}


def main(argv=None) -> None:
    from minilooped.training.checkpoint import load_checkpoint
    from minilooped.training.sampling import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a run or ckpt_* folder of a fully_looped model")
    ap.add_argument("--n_loops", type=int, nargs="*", default=[], help="loop counts besides the model's")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--prompt_len", type=int, default=8)
    args = ap.parse_args(argv)
    model = load_model(load_checkpoint(args.run), "numpy").to("float64")
    prompts = np.random.default_rng(0).integers(0, model.config.vocab_size, (args.prompts, args.prompt_len))
    for n in [None, *args.n_loops]:
        r = drift(model, prompts, n)
        print(f"n_loops={r['n_loops']}: new tokens differing {r['tokens_differing']}/{r['tokens']} (first "
              f"difference per row: {r['first_difference']}); teacher-forced next-token logits: max |diff| "
              f"{r['max_logit_diff']:.3g} (mean over steps {r['mean_step_max_logit_diff']:.3g}; logits up to "
              f"{r['max_abs_logit']:.3g}), argmax agreement {r['argmax_agreement']:.3f}")


if __name__ == "__main__":
    main()
