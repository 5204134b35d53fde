"""What a study is: named runs (a config plus overrides, over seeds) and what to measure on each.

A :class:`Run` is one training recipe: a shipped TrainConfig (``minilooped/configs/``)
plus overrides of TrainConfig or GPTConfig fields, exactly the ``--key=value`` settings of
``python -m minilooped.train``. Two hooks cover what is not plain training:

- ``prepare(job) -> dict``: called before training, returns more overrides (e.g. builds
  a converted model from another run of the same seed and returns ``{"init_from": path}``);
- ``evaluate(job) -> dict``: a step that does not train at all; what it returns is
  stored as the run's measurements.

A :class:`Study` is the list of runs, the measurements taken after each
(minilooped.experiments.measurements), its seeds, and the settings of its reduced
version. :func:`grid` writes the usual sweep, variants x learning rates, in one call.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Callable

# The reduced version of every study: a model of a few thousand parameters, a few steps.
# It checks that every run of a study builds, trains, is measured and summarised (CI runs
# it for every study); its numbers mean nothing.
REDUCED = dict(n_embd=32, n_head=2, block_size=16, batch_size=4, max_iters=6, warmup_iters=2,
               lr_decay_iters=0, eval_interval=3, eval_iters=2, log_interval=1, progress=False)
REDUCED_SEEDS = (0,)

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")  # a folder and file name everywhere


@dataclass(frozen=True)
class Run:
    label: str  # unique in its study; names its folders and its entry in the summary
    config: str = "shakespeare-loop-residual"  # a shipped TrainConfig
    overrides: dict = field(default_factory=dict)  # {"n_loops": 8, "learning_rate": 1e-3, ...}
    seeds: tuple[int, ...] | None = None  # None: the study's seeds
    prepare: Callable | None = None  # prepare(job) -> extra overrides, before training
    evaluate: Callable | None = None  # evaluate(job) -> measurements, instead of training
    needs: tuple[str, ...] = ()  # labels of runs (same seed) that must be finished first

    def __post_init__(self):
        if not _LABEL.match(self.label):
            raise ValueError(f"run label {self.label!r}: use letters, digits and _ . = + - "
                             "(it names folders and files)")


@dataclass(frozen=True)
class Study:
    name: str
    measures: str  # one paragraph: what the study measures (shown by --list)
    runs: tuple[Run, ...]
    measurements: tuple = ()  # beyond DEFAULT_MEASUREMENTS: "name" or ("name", {kwargs})
    seeds: tuple[int, ...] = (0, 1, 2)
    chapter: str = ""
    reduced_overrides: dict = field(default_factory=dict)  # more overrides of the reduced version
    reduced_measurements: dict = field(default_factory=dict)  # {"name": {kwargs}} in the reduced version
    reduced_runs: tuple[str, ...] | None = None  # labels the reduced version keeps (None: all)
    is_reduced: bool = False

    def __post_init__(self):
        labels = [r.label for r in self.runs]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"study {self.name!r}: run labels {dup} appear more than once")
        unknown = [x for x in (self.reduced_runs or ()) if x not in labels]
        if unknown:
            raise ValueError(f"study {self.name!r}: reduced_runs names unknown runs {unknown}")
        for i, r in enumerate(self.runs):
            for need in r.needs:
                if need not in labels[:i]:
                    raise ValueError(f"study {self.name!r}: run {r.label!r} needs {need!r}, "
                                     "which must be a run listed before it")

    def run(self, label: str) -> Run:
        for r in self.runs:
            if r.label == label:
                return r
        raise KeyError(label)

    def seeds_of(self, run: Run) -> tuple[int, ...]:
        return tuple(run.seeds if run.seeds is not None else self.seeds)

    def reduced(self) -> "Study":
        """The tiny version: REDUCED (and reduced_overrides) on top of every run, one seed."""
        small = {**REDUCED, **self.reduced_overrides}
        runs = tuple(dataclasses.replace(r, overrides={**r.overrides, **small}, seeds=None) for r in self.runs
                     if self.reduced_runs is None or r.label in self.reduced_runs)
        measurements = tuple(_reduce_measurement(m, self.reduced_measurements) for m in self.measurements)
        return dataclasses.replace(self, runs=runs, measurements=measurements, seeds=REDUCED_SEEDS,
                                   is_reduced=True)


def _reduce_measurement(m, reduced: dict):
    name = m if isinstance(m, str) else m[0]
    if name in reduced:
        return (name, reduced[name])
    return m


def grid(variants: dict[str, dict], config: str = "shakespeare-loop-residual", lrs=None,
         lr_seeds: tuple[int, ...] | None = None, **common) -> tuple[Run, ...]:
    """One Run per variant, times each learning rate of ``lrs`` when given.

    ``variants``: label -> overrides (a variant may name its own ``config``). ``common``:
    overrides shared by all. With ``lrs`` the labels are ``<variant>_lr<lr>`` and min_lr is
    lr / 10 (the shipped configs' ratio); ``lr_seeds`` gives the sweep's runs their own
    seeds (e.g. one seed away from the default rate)::

        grid({"loops2": {"n_loops": 2}, "loops8": {"n_loops": 8}}, lrs=(1e-3, 4e-3), max_iters=500)
    """
    runs = []
    for label, over in variants.items():
        over = {**common, **over}
        cfg = over.pop("config", config)
        if lrs is None:
            runs.append(Run(label, cfg, over))
            continue
        for lr in lrs:
            runs.append(Run(f"{label}_lr{lr:g}", cfg, {**over, "learning_rate": lr, "min_lr": lr / 10},
                            seeds=lr_seeds))
    return tuple(runs)


__all__ = ["Run", "Study", "grid", "REDUCED", "REDUCED_SEEDS"]
