"""`python -m minilooped.bench exit --run=RUN_DIR`: the adaptive-exit frontier of a trained looped
model and the throughput of continuous depth-wise batching on the CPU (chapter 10).

Loads the run's latest checkpoint into the NumPy core, takes seeded batches of its
validation split, and reports

- ``frontier``: for each criterion (kl, max_prob) and threshold, mean loops per token, val
  loss and tokens/s of adaptive.py's per-token exit, beside the fixed depths 1 .. n_loops;
- ``depthwise``: for requests (windows of the validation text whose last position's next
  token is wanted) with exit depths from the model's own predictions (exit_depths), the
  tokens/s of continuous depth-wise batching, of plain batching (each group waits for its
  slowest request) and of every request at max depth, and the oracle bound max / mean depth.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

KL_THRESHOLDS = (1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1)
MAX_PROB_THRESHOLDS = (0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4)


def load_run(run_dir):
    """(core model in eval mode, the run's data) from a run folder's latest checkpoint."""
    from ..models import GPT, GPTConfig
    from ..training import TrainConfig, load_checkpoint
    from ..training.run_data import load_run_data

    ckpt = load_checkpoint(run_dir)
    config = GPTConfig.from_dict(ckpt.state["model_config"])
    model = GPT(config)
    model.load_state_dict(ckpt.weights)
    cfg = TrainConfig.from_dict(ckpt.state["train_config"])
    data = load_run_data(cfg, config.block_size, log=lambda *a, **k: None)
    return model.eval(), data


def run(run_dir, batches=8, batch_size=16, requests=256, slots=16, repeat=3, seed=0, log=print) -> dict:
    from ..data import get_batch
    from ..models.adaptive import exit_frontier
    from ..models.depthwise_batching import exit_depths, throughput

    model, data = load_run(run_dir)
    T = model.config.block_size
    rng = np.random.default_rng([seed, 3])
    val = [get_batch(data.val, batch_size, T, rng) for _ in range(batches)]
    report = {"run": str(run_dir), "model": model.config.to_dict(), "frontier": {}, "depthwise": {}}
    for criterion, thresholds in (("kl", KL_THRESHOLDS), ("max_prob", MAX_PROB_THRESHOLDS)):
        log(f"frontier, {criterion}...")
        report["frontier"][criterion] = exit_frontier(model, val, criterion, thresholds, repeat=repeat)
    idx = get_batch(data.val, requests, T, rng)[0]
    for criterion, threshold in (("max_prob", 0.5), ("kl", 1e-2)):
        log(f"depth-wise batching, {criterion} < {threshold}...")
        depths = exit_depths(model, idx, criterion, threshold)
        report["depthwise"][f"{criterion}@{threshold}"] = throughput(model, idx, depths, slots, repeat)
    return report


def format_report(report: dict) -> str:
    lines = []
    for criterion, f in report["frontier"].items():
        lines.append(f"adaptive exit, {criterion} ({f['tokens']} tokens, max {f['max_loops']} loops)")
        lines.append(f"  {'threshold':>10} {'mean loops':>10} {'val loss':>9} {'tok/s':>9} {'tok/cpu-s':>9}")
        for p in f["adaptive"]:
            lines.append(f"  {p['threshold']:>10g} {p['mean_loops']:>10.3f} {p['val_loss']:>9.4f} "
                         f"{p['tokens_per_s']:>9.0f} {p['tokens_per_cpu_s']:>9.0f}")
        for p in f["fixed"]:
            lines.append(f"  {'fixed':>10} {p['loops']:>10d} {p['val_loss']:>9.4f} "
                         f"{p['tokens_per_s']:>9.0f} {p['tokens_per_cpu_s']:>9.0f}")
    for name, r in report["depthwise"].items():
        lines.append(f"depth-wise batching, exits by {name}: {r['requests']} requests x {r['tokens_per_request']} "
                     f"tokens, {r['slots']} slots, mean depth {r['mean_depth']:.2f} of {r['max_loops']} "
                     f"(histogram {r['depth_histogram']}), oracle bound {r['oracle_speedup']:.2f}x")
        for s in ("max_depth", "static", "continuous"):
            lines.append(f"  {s:>10}: {r[s]['row_loops']:>6d} row-loops, {r[s]['tokens_per_s']:>8.0f} tok/s "
                         f"({r[s]['speedup_vs_max_depth']:.2f}x), {r[s]['tokens_per_cpu_s']:>8.0f} tok/cpu-s "
                         f"({r[s]['cpu_speedup_vs_max_depth']:.2f}x)")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m minilooped.bench exit", description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="a run folder (or ckpt_* folder) of a looped model")
    ap.add_argument("--batches", type=int, default=8, help="validation batches for the frontier")
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--requests", type=int, default=256, help="requests for the depth-wise batching")
    ap.add_argument("--slots", type=int, default=16, help="batch rows of the depth-wise batching")
    ap.add_argument("--repeat", type=int, default=3, help="timings per point; the fastest counts")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    report = run(args.run, args.batches, args.batch_size, args.requests, args.slots, args.repeat,
                 log=lambda s: print(s, file=sys.stderr))
    print(format_report(report))
    if args.json:
        from ..atomic import atomic_write_json
        from .provenance import provenance

        atomic_write_json(args.json, {"provenance": provenance(["exit", *(argv if argv is not None else sys.argv[2:])]),
                                      **report})


if __name__ == "__main__":
    main()
