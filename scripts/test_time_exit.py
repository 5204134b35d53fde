"""Adaptive exit's frontier on the test_time study's trained models (chapter 10).

    python scripts/test_time_exit.py --runs_dir runs/experiments/test_time \
        --out book/data/experiments/test_time_exit/frontier.json

For every looped run of the study (loop_residual, fully_looped, contractive, parcae) and
every seed, the latest checkpoint of its training folder is loaded into the PyTorch mirror
and minilooped.torch.models.adaptive.exit_frontier measures, on the first ``--batches`` of
the study's own fixed validation batches (Trained.val_batches: the batches of its logged val
loss and of its depth curve), for each KL threshold the mean loops per token and the val loss
of per-token exit (Huginn's criterion: stop when KL(p_{t-1} || p_t) < threshold), beside the
fixed depths 1 .. ``--max_loops``. The training folders are not committed (they hold the
checkpoints); this file's output is, with its provenance.

A run is measured only once the study has written its result (``--results_dir``), so that a
checkpoint still training is never read; rerun the same command to add the runs finished since:
the entries already in ``--out`` (made with the same settings) are kept.

Only losses and loop counts are kept: exit_frontier's tokens/s depend on the machine and its
load and are dropped. Cost: about 5 s per run and seed with the defaults on one idle core (1 min for the study).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

LOOPED = ("loop_residual", "fully_looped", "contractive", "parcae")
KL_THRESHOLDS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


def frontier_of(job, batches: int, max_loops: int, thresholds) -> dict:
    """exit_frontier of one trained job, without the timings."""
    import torch

    from minilooped.experiments import Trained
    from minilooped.torch.models.adaptive import exit_frontier

    torch.manual_seed(job.seed)  # Parcae draws its h_0 from it: a rerun repeats
    run = Trained(job.cfg, job.run_dir)
    try:
        f = exit_frontier(run.model, run.val_batches(batches), "kl", thresholds, max_loops=max_loops,
                          gather=False)
    finally:
        run.close()
    drop = ("tokens_per_s", "tokens_per_cpu_s")
    return {"criterion": f["criterion"], "max_loops": f["max_loops"], "tokens": f["tokens"],
            "adaptive": [{k: v for k, v in p.items() if k not in drop} for p in f["adaptive"]],
            "fixed": [{k: v for k, v in p.items() if k not in drop} for p in f["fixed"]]}


def main(argv=None) -> int:
    import torch

    from minilooped.experiments import get_study, plan
    from minilooped.provenance import provenance

    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs_dir", default="runs/experiments/test_time", help="the study's training folders")
    ap.add_argument("--out", default="book/data/experiments/test_time_exit/frontier.json")
    ap.add_argument("--batches", type=int, default=5, help="the first of the study's fixed val batches (16 x 64 tokens each)")
    ap.add_argument("--max_loops", type=int, default=8)
    ap.add_argument("--results_dir", default="book/data/experiments/test_time",
                    help="the study's results: a run is measured once its result file is there")
    ap.add_argument("--reduced", action="store_true", help="the reduced study's runs (a check, not results)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    study = get_study("test_time")
    if args.reduced:
        study = study.reduced()
    jobs = plan(study, backend="torch", runs_dir=args.runs_dir, results_dir=args.results_dir, only=LOOPED)
    out = {"study": study.name, "reduced": study.is_reduced, "criterion": "kl", "thresholds": list(KL_THRESHOLDS),
           "max_loops": args.max_loops, "batches": args.batches, "runs": {}}
    settings = {k: v for k, v in out.items() if k != "runs"}
    if Path(args.out).is_file():  # keep what an earlier call with the same settings measured
        old = json.loads(Path(args.out).read_text(encoding="utf-8"))
        if {k: old.get(k) for k in settings} == settings:
            out["runs"] = old["runs"]
    for job in jobs:
        if str(job.seed) in out["runs"].get(job.run.label, {}):
            continue
        if not job.result_path.is_file():
            print(f"{job.run.label} seed {job.seed}: not finished (no {job.result_path}), skipped")
            continue
        print(f"{job.run.label} seed {job.seed}...", flush=True)
        out["runs"].setdefault(job.run.label, {})[str(job.seed)] = frontier_of(
            job, args.batches, args.max_loops, KL_THRESHOLDS)
        write(args.out, out, provenance(["python", "scripts/test_time_exit.py", *argv]))  # each run as it comes
    write(args.out, out, provenance(["python", "scripts/test_time_exit.py", *argv]))
    print(f"written: {args.out}")
    return 0


def write(path, out, prov) -> None:
    from minilooped.atomic import atomic_write_json

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(path), {**out, "provenance": prov})


if __name__ == "__main__":
    raise SystemExit(main())
