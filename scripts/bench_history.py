"""Measure the training-step bench on earlier versions of the core (book appendix A1).

    python scripts/bench_history.py --rev 6a21683 --label before --rev HEAD --label after \
        --out book/data/perf/history.json -- --threads 1

For each revision a temporary git worktree is checked out; the from-scratch core
(backend, tensor, ops, functional, nn, optim, io) comes from that revision, while the
models, data, training loop and the bench itself are overlaid from the working tree, so
that only the core differs between the measurements. Pass ``--threads 1`` to the bench (as
the book does): the batch split of training/threads.py is not part of the core, and older
cores lack what it needs (per-thread generators and grad mode). Each run calls
`python -m minilooped.bench train --json` inside that tree. The results, with the command,
the commits, the machine and the date, are written to one JSON file that the appendix plots.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from minilooped.atomic import atomic_write_json  # noqa: E402
from minilooped.bench.provenance import machine  # noqa: E402
# everything above the core: taken from the working tree for every revision
OVERLAY = ["minilooped/models", "minilooped/torch", "minilooped/data", "minilooped/training",
           "minilooped/bench", "minilooped/configs", "minilooped/train.py", "minilooped/sample.py",
           "minilooped/grading", "minilooped/grade.py", "minilooped/testing.py", "minilooped/atomic.py"]


def git(*args, cwd=ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def measure(rev: str, bench_args: list[str]) -> dict:
    commit = git("rev-parse", rev)
    tmp = tempfile.mkdtemp(prefix="minilooped-bench-")
    tree = os.path.join(tmp, "tree")
    git("worktree", "add", "--detach", tree, commit)
    try:
        for rel in OVERLAY:
            src, dst = os.path.join(ROOT, rel), os.path.join(tree, rel)
            if os.path.isdir(dst):
                shutil.rmtree(dst)
            if os.path.isdir(src):
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
            elif os.path.exists(src):
                shutil.copy2(src, dst)
        out = os.path.join(tmp, "bench.json")
        env = dict(os.environ, PYTHONPATH=tree, MINILOOPED_DATA=os.environ.get(
            "MINILOOPED_DATA", os.path.join(ROOT, "data_cache")))
        cmd = [sys.executable, "-m", "minilooped.bench", "train", "--json", out, *bench_args]
        print(f"[{rev} = {commit[:7]}] {' '.join(cmd[1:])}", flush=True)
        subprocess.run(cmd, cwd=tree, env=env, check=True)
        with open(out) as f:
            return {"rev": rev, "commit": commit, "result": json.load(f)}
    finally:
        git("worktree", "remove", "--force", tree)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", action="append", required=True, help="a git revision whose core to measure")
    ap.add_argument("--label", action="append", required=True, help="a name for each --rev, in order")
    ap.add_argument("--out", required=True, help="the JSON file to write")
    ap.add_argument("bench_args", nargs="*", help="passed to `python -m minilooped.bench train` (after --)")
    args = ap.parse_args(argv)
    if len(args.rev) != len(args.label):
        raise SystemExit("give one --label per --rev")
    runs = []
    for rev, label in zip(args.rev, args.label):
        run = measure(rev, args.bench_args)
        run["label"] = label
        runs.append(run)
    record = {
        "command": " ".join(["python", "scripts/bench_history.py", *(argv or sys.argv[1:])]),
        "harness_commit": git("rev-parse", "HEAD"),
        "machine": machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "runs": runs,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    atomic_write_json(args.out, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
