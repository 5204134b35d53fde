"""``python -m minilooped.experiments``: list the studies, or run one.

    python -m minilooped.experiments --list
    python -m minilooped.experiments loop_residual                    # the full study (hours)
    python -m minilooped.experiments loop_residual --reduced          # the tiny version (seconds)
    python -m minilooped.experiments loop_stability --seeds=0,1 --backend=torch
    python -m minilooped.experiments recursive --only=gpt2_source,K2_stepwise_r8

Interrupted? Run the same command again: finished runs are skipped, a run with a
checkpoint resumes from it. Options: --out_dir (results; default book/data/experiments/NAME,
for --reduced runs/experiments/NAME-reduced/results), --runs_dir (training folders; default
runs/experiments/NAME[-reduced]).
"""
from __future__ import annotations

import argparse
import sys

from ..training import ConfigError
from .cost import estimate, format_seconds
from .runner import run_study, unavailable_runs
from .studies import STUDIES, get_study


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds={text!r}: give integers separated by commas, e.g. --seeds=0,1,2") \
            from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds={text!r}: seeds must be distinct integers >= 0")
    return seeds


def describe(study) -> str:
    """The study's --list entry: name, runs, full cost on 2 CPU cores, what it measures."""
    import textwrap

    seconds, jobs, stand_ins = estimate(study)
    cost = (f"{len(jobs)} trainings, about {format_seconds(seconds)} on 2 CPU cores "
            "(NumPy core; about half with --backend=torch)")
    if stand_ins:
        cost += (f"\n    needs fields this version lacks (estimated as the nearest model): "
                 f"{', '.join(stand_ins)}")
    body = textwrap.fill(study.measures, width=96, initial_indent="    ", subsequent_indent="    ")
    return f"{study.name}  (chapter {study.chapter}; {len(study.runs)} runs, seeds {list(study.seeds)})\n" \
           f"    {cost}\n{body}"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m minilooped.experiments", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("name", nargs="?", help="the study to run (see --list)")
    ap.add_argument("--list", action="store_true", help="name the studies, what each measures and its cost")
    ap.add_argument("--reduced", action="store_true", help="the tiny version (seconds): checks, not results")
    ap.add_argument("--seeds", type=parse_seeds, default=None, help="e.g. 0,1,2 (default: the study's)")
    ap.add_argument("--backend", choices=("numpy", "torch", "cupy"), default=None,
                    help="the engine of every run (default: the configs', numpy)")
    ap.add_argument("--only", default=None, help="comma-separated run labels: run just these")
    ap.add_argument("--out_dir", default=None, help="where results and summary.json go")
    ap.add_argument("--runs_dir", default=None, help="where the training folders go")
    args = ap.parse_args(argv)
    if args.list:
        print("\n\n".join(describe(s) for s in STUDIES.values()))
        return 0
    if not args.name:
        ap.error("name a study (python -m minilooped.experiments --list shows them)")
    try:
        study = get_study(args.name)
    except KeyError as e:
        ap.error(e.args[0])
    if args.reduced:
        study = study.reduced()
    only = args.only.split(",") if args.only else None
    try:
        summary = run_study(study, seeds=args.seeds, backend=args.backend, runs_dir=args.runs_dir,
                            results_dir=args.out_dir, only=only, argv=argv)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        missing = unavailable_runs(study)
        if missing:
            print(f"{len(missing)} of the {len(study.runs)} runs of {study.name} need config fields or values this "
                  f"version lacks ({', '.join(missing)}); --only=LABEL,... runs the others", file=sys.stderr)
        return 2
    done = sum(1 for r in summary["runs"].values() if r["seeds"])
    print(f"summary written: {done} of {len(summary['runs'])} runs have results ({summary['provenance']['wall_time_s']:.0f} s)")
    return 0


__all__ = ["main", "parse_seeds", "describe"]
