"""Mean and spread over seeds of every measurement, and the loader the notebooks use.

For each run label and each measurement, :func:`stats` of its values over the seeds:

    number  -> {"mean", "std", "min", "max", "n"}
    list    -> the same keys, each a list (elementwise; a shorter list, e.g. the curve of a
               run that diverged early, counts only where it has values)
    dict    -> {key: stats of that key}, recursively

``std`` is the sample standard deviation (n - 1 in the denominator; 0 for a single seed),
null values (diverged runs, depths a model cannot run) are left out and ``n`` counts the
values that went in. A notebook plots a study in a line::

    from minilooped.experiments import load
    r = load("loop_residual")
    c = r.get("loop_1x4", "val_loss_by_loops")
    plt.errorbar(c["loops"]["mean"], c["val_loss"]["mean"], c["val_loss"]["std"])
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path


def stats(values: list):
    """Mean, sample std, min, max and n over ``values`` (numbers, lists or dicts alike)."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, dict) for v in present):
        keys = list(dict.fromkeys(k for v in present for k in v))
        return {k: stats([v.get(k) for v in present]) for k in keys}
    if present and all(isinstance(v, (list, tuple)) for v in present):
        length = max(len(v) for v in present)
        cols = [_scalar_stats([v[i] for v in present if i < len(v)]) for i in range(length)]
        return {key: [c[key] for c in cols] for key in ("mean", "std", "min", "max", "n")}
    return _scalar_stats(present)


def _scalar_stats(values: list) -> dict:
    xs = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
          and math.isfinite(v)]
    n = len(xs)
    if n == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    mean = math.fsum(xs) / n
    var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1) if n > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var), "min": min(xs), "max": max(xs), "n": n}


def summarise(study, results: dict) -> dict:
    """The summary of ``study`` from its per-run results ``{label: {seed: result}}``."""
    runs = {}
    for run in study.runs:
        by_seed = results.get(run.label, {})
        finished = [s for s, r in sorted(by_seed.items()) if r.get("status") == "finished"]
        names = list(dict.fromkeys(k for r in by_seed.values() for k in r.get("measurements", {})))
        runs[run.label] = {
            "config": run.config, "overrides": _jsonable(run.overrides),
            "seeds": sorted(by_seed), "finished": finished,
            "diverged": [s for s, r in sorted(by_seed.items()) if r.get("status") == "diverged"],
            "measurements": {m: stats([r["measurements"].get(m) for _, r in sorted(by_seed.items())])
                             for m in names},
        }
    return {"study": study.name, "chapter": study.chapter, "measures": study.measures,
            "reduced": study.is_reduced, "runs": runs}


def _jsonable(d: dict) -> dict:
    return {k: v if isinstance(v, (int, float, str, bool, type(None), list, dict)) else repr(v)
            for k, v in d.items()}


@dataclass
class StudyResults:
    """A study's summary (summary.json) and every per-run result file, as written."""
    path: Path
    summary: dict
    results: dict  # {label: {seed: result}}

    @property
    def labels(self) -> list[str]:
        return list(self.summary["runs"])

    def get(self, label: str, measurement: str, *keys: str) -> dict:
        """The stats of one measurement of one run, ``keys`` going into a dict measurement:
        ``get("loop_1x4", "loss_curve", "val_loss")["mean"]``."""
        runs = self.summary["runs"]
        if label not in runs:
            raise KeyError(f"no run {label!r} in {self.path}; runs: {', '.join(runs)}")
        ms = runs[label]["measurements"]
        if measurement not in ms:
            raise KeyError(f"run {label!r} has no measurement {measurement!r}; it has {', '.join(ms)}")
        out = ms[measurement]
        for k in keys:
            out = out[k]
        return out

    def best(self, measurement: str = "final_val_loss", group=lambda label: label.rsplit("_lr", 1)[0]) -> dict:
        """{group: the label with the lowest mean} of a learning-rate sweep (labels ``<variant>_lr<lr>``
        from :func:`~minilooped.experiments.grid`): each variant at its own best rate. Runs
        that diverged at every seed have no mean and are never best."""
        out: dict = {}
        for label in self.labels:
            mean = self.summary["runs"][label]["measurements"].get(measurement, {}).get("mean")
            g = group(label)
            if mean is not None and (g not in out or mean < out[g][1]):
                out[g] = (label, mean)
        return {g: label for g, (label, _) in out.items()}

    def values(self, label: str, measurement: str) -> dict:
        """{seed: value} of one measurement of one run: the numbers behind the mean."""
        return {s: r["measurements"].get(measurement) for s, r in self.results.get(label, {}).items()}


def read_results(results_dir: str | Path) -> dict:
    """{label: {seed: result}} from ``<results_dir>/runs/<label>/seed<k>.json``."""
    out: dict = {}
    root = Path(results_dir) / "runs"
    for f in sorted(root.glob("*/seed*.json")):
        r = json.loads(f.read_text(encoding="utf-8"))
        out.setdefault(r["label"], {})[r["seed"]] = r
    return out


def load(name: str, results_dir: str | Path | None = None) -> StudyResults:
    """The results of study ``name``: book/data/experiments/<name>/ (or ``results_dir``)."""
    from .runner import default_results_dir

    path = Path(results_dir) if results_dir is not None else default_results_dir(name, reduced=False)
    summary_path = path / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"no summary at {summary_path}: run `python -m minilooped.experiments {name}` "
                                "to make it (or pass results_dir)")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    return StudyResults(path, summary, read_results(path))


__all__ = ["stats", "summarise", "load", "read_results", "StudyResults"]
