"""Train the course's default config with both implementations and keep the results for the book.

    python scripts/run_default_training.py            # the full run: ~minutes per implementation
    python scripts/run_default_training.py --quick    # a few dozen steps (CI: tests/test_train_default.py)

Each implementation runs ``python -m minilooped.train --backend=<numpy|torch>`` in its own
process with 2 threads. The full run writes, under book/data/training/:

    default_numpy.jsonl, default_torch.jsonl    the runs' metrics logs
    default_summary.json                        command, git commit, machine, date, and per
                                                implementation: steps, time, final losses,
                                                the unigram baseline, speed, a sample text

The chapters' notebooks plot these files (minilooped.training.results), so the book shows
a real run without training while it builds. --quick writes to a temporary folder
unless --out is given, so it never replaces the committed results.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = "shakespeare-loop-residual"


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads_used": 2, "platform": platform.platform(),
            "python": platform.python_version()}


def run_one(backend: str, runs_dir: Path, extra: list[str]) -> dict:
    out_dir = runs_dir / f"default-{backend}"
    cmd = [sys.executable, "-m", "minilooped.train", CONFIG, f"--backend={backend}", f"--out_dir={out_dir}",
           "--progress=false", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2", MKL_NUM_THREADS="2")
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()[0]
    if proc.returncode:
        raise SystemExit(f"{backend} run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    sys.path.insert(0, str(REPO))
    from minilooped.training.metrics import read_jsonl
    from minilooped.training.sampling import SampleConfig, generate_texts

    records = read_jsonl(out_dir / "metrics.jsonl")
    start = next(r for r in records if r["kind"] == "start")
    end = next(r for r in records if r["kind"] == "end")
    steps = [r for r in records if r["kind"] == "train"]
    timed = steps[5:] or steps  # the first steps warm caches up
    sample = generate_texts(SampleConfig(out_dir=str(out_dir), start="\n", num_samples=1, max_new_tokens=200,
                                         temperature=0.8, top_k=40, seed=1337, backend=backend))[0]
    return {
        "command": " ".join(["python", "-m", "minilooped.train", *cmd[3:]]).replace(f"{REPO}/", ""),
        "steps": end["step"],
        "wall_time_s": round(wall, 1),  # the whole process: imports, data, training, evaluations
        "train_time_s": round(end["elapsed"], 1),  # training and evaluations
        "final_train_loss": end["train_loss"],
        "final_val_loss": end["val_loss"],
        "val_curve": [(r["step"], r["val_loss"]) for r in records if r["kind"] == "eval"],
        "unigram_entropy": start["unigram_entropy"],
        "uniform_loss": start["uniform_loss"],
        "params": start["params"],
        "median_ms_per_step": round(statistics.median(r["dt_ms"] for r in timed), 1),
        "median_tokens_per_s": round(statistics.median(r["tok_per_s"] for r in timed)),
        "sample": sample,
        # the machine's 1-minute load average before and after: above 2 (the core count), other
        # processes shared the CPU and the times are slower than on an idle machine
        "load_average_before_after": [round(load_before, 2), round(load_after, 2)],
        "metrics": str(out_dir / "metrics.jsonl"),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a few dozen steps, results in a temporary folder")
    p.add_argument("--out", default=None, help="results folder (default book/data/training; --quick: a temp folder)")
    p.add_argument("--backends", default="numpy,torch")
    p.add_argument("--runs-dir", default=None, help="where the runs' checkpoints go (default runs/)")
    args = p.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="minilooped-default-")) if args.quick else None
    out = Path(args.out) if args.out else (tmp / "results" if args.quick else REPO / "book" / "data" / "training")
    runs_dir = Path(args.runs_dir) if args.runs_dir else (tmp / "runs" if args.quick else REPO / "runs")
    extra = ["--max_iters=30", "--eval_interval=15", "--eval_iters=4", "--warmup_iters=5"] if args.quick else []
    out.mkdir(parents=True, exist_ok=True)
    summary = {"config": CONFIG, "quick": args.quick, "git_commit": git_commit(), "machine": machine(),
               "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "runs": {}}
    for backend in args.backends.split(","):
        print(f"training {CONFIG} with the {backend} backend ...", flush=True)
        r = run_one(backend, runs_dir, extra)
        shutil.copyfile(r.pop("metrics"), out / f"default_{backend}.jsonl")
        summary["runs"][backend] = r
        print(f"  {r['steps']} steps in {r['train_time_s']} s ({r['median_ms_per_step']} ms/step): val loss "
              f"{r['final_val_loss']:.4f} vs unigram entropy {r['unigram_entropy']:.4f} nats/token", flush=True)
    (out / "default_summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
