"""Studies: the training runs and measurements behind part II's figures (chapters 5-10).

    python -m minilooped.experiments --list                 # the studies and their cost
    python -m minilooped.experiments loop_residual          # run (or resume) one
    python -m minilooped.experiments loop_residual --reduced   # its tiny version, for CI

    from minilooped.experiments import load
    r = load("loop_residual")                               # book/data/experiments/loop_residual/
    r.get("loop_1x4", "final_val_loss")                     # {"mean", "std", "min", "max", "n"}

A study (study.py) is a list of runs (a shipped config plus overrides, over seeds) and the
measurements taken after each (measurements.py); runner.py trains, resumes and measures
them and writes each result with its provenance; summary.py gives mean and spread over
seeds and loads them back; studies.py defines the chapters' studies; cost.py estimates
their time on 2 CPU cores; cli.py is the command line. Adding a study is a few lines::

    from minilooped.experiments import Study, grid, STUDIES
    STUDIES["my_sweep"] = Study("my_sweep", measures="...", runs=grid(
        {"loops2": {"n_loops": 2}, "loops8": {"n_loops": 8}}, lrs=(1e-3, 4e-3), max_iters=500))
"""
from .measurements import DEFAULT_MEASUREMENTS, MEASUREMENTS, Trained, measurement
from .runner import Job, plan, run_study
from .studies import STUDIES, get_study
from .study import REDUCED, Run, Study, grid
from .summary import StudyResults, load, stats, summarise

__all__ = ["Study", "Run", "grid", "REDUCED", "STUDIES", "get_study", "plan", "run_study", "Job", "load",
           "stats", "summarise", "StudyResults", "measurement", "MEASUREMENTS", "DEFAULT_MEASUREMENTS", "Trained"]
