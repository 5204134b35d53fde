"""Run a study: train each (run, seed), measure it, write its result, then the summary.

Where things go (``<root>`` is the repository in a source checkout, else the working folder):

    <root>/runs/experiments/<name>/<label>/seed<k>/        the training run (checkpoints, metrics.jsonl)
    <root>/book/data/experiments/<name>/runs/<label>/seed<k>.json   its result (committed)
    <root>/book/data/experiments/<name>/summary.json      mean and spread over seeds

A reduced study (``--reduced``) writes everything under ``<root>/runs/experiments/<name>-reduced/``
(results in its ``results/`` folder), so it never touches the committed full results;
``results_dir`` / ``runs_dir`` put them elsewhere.

Resuming: a (run, seed) whose result file exists is skipped; one whose folder holds a
checkpoint continues from it (TrainConfig.resume; the training loop's resume is exact);
anything else starts afresh. Killing a study and starting it again therefore loses at
most the steps since the last checkpoint. Every file is written atomically.
"""
from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..atomic import atomic_write_json, atomic_write_text
from ..provenance import provenance
from ..training import (CheckpointError, ConfigError, TrainConfig, TrainingDiverged, apply_overrides,
                        latest_checkpoint, load_config, train)
from .cost import study_seconds
from .measurements import DEFAULT_MEASUREMENTS, Trained, check_specs, measure
from .study import Run, Study
from .summary import _jsonable, read_results, summarise


def root() -> Path:
    """The repository root in a source checkout (so notebooks in chapters/ find the files),
    else the working folder."""
    repo = Path(__file__).resolve().parents[2]
    return repo if (repo / "pyproject.toml").is_file() and (repo / "minilooped").is_dir() else Path.cwd()


def default_results_dir(name: str, reduced: bool) -> Path:
    if reduced:
        return root() / "runs" / "experiments" / f"{name}-reduced" / "results"
    return root() / "book" / "data" / "experiments" / name


def default_runs_dir(name: str, reduced: bool) -> Path:
    return root() / "runs" / "experiments" / (f"{name}-reduced" if reduced else name)


@dataclass
class Job:
    """One (run, seed) of a study, with its config and where its files go."""
    study: Study
    run: Run
    seed: int
    cfg: TrainConfig | None  # None for an evaluate-only run
    runs_dir: Path
    results_dir: Path

    @property
    def run_dir(self) -> Path:
        return self.run_dir_of(self.run.label)

    def run_dir_of(self, label: str) -> Path:
        """The training folder of run ``label`` at this job's seed (for prepare/evaluate hooks)."""
        return self.runs_dir / label / f"seed{self.seed}"

    def result_path_of(self, label: str) -> Path:
        return self.results_dir / "runs" / label / f"seed{self.seed}.json"

    @property
    def result_path(self) -> Path:
        return self.result_path_of(self.run.label)


def config_of(run: Run, seed: int, backend: str | None, run_dir: Path, study: str) -> TrainConfig:
    """The run's TrainConfig at ``seed``: its shipped config, its overrides, seed and folder."""
    over = {**run.overrides, "seed": seed, "out_dir": str(run_dir), "name": f"{study}/{run.label}/seed{seed}"}
    if backend:
        over["backend"] = backend
    try:
        cfg = apply_overrides(load_config(run.config), over)
        cfg.model_config()  # the model is valid too (every error before the first step)
    except (ConfigError, ValueError) as e:
        raise ConfigError(f"study {study!r}, run {run.label!r}: {e}") from None
    return cfg


def plan(study: Study, seeds=None, backend: str | None = None, runs_dir=None, results_dir=None,
         only=None) -> list[Job]:
    """Every (run, seed) of ``study`` in order, configs built and checked.

    ``seeds`` replaces every run's seeds; ``only`` keeps the runs with these labels."""
    check_specs((*DEFAULT_MEASUREMENTS, *study.measurements))
    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir(study.name, study.is_reduced)
    results_dir = Path(results_dir) if results_dir is not None else default_results_dir(study.name, study.is_reduced)
    if only is not None:
        unknown = [x for x in only if x not in [r.label for r in study.runs]]
        if unknown:
            raise ValueError(f"study {study.name!r} has no run {unknown[0]!r}; its runs: "
                             + ", ".join(r.label for r in study.runs))
    jobs = []
    for run in study.runs:
        if only is not None and run.label not in only:
            continue
        for seed in (tuple(seeds) if seeds is not None else study.seeds_of(run)):
            job = Job(study, run, seed, None, runs_dir, results_dir)
            if run.evaluate is None:
                job.cfg = config_of(run, seed, backend, job.run_dir, study.name)
            jobs.append(job)
    return jobs


def unavailable_runs(study: Study) -> dict[str, str]:
    """{label: why} for the runs whose configs this version cannot build (fields or values
    that later work adds; see studies.py). ``only=`` the other labels runs the rest."""
    out = {}
    for run in study.runs:
        if run.evaluate is None:
            try:
                config_of(run, study.seeds_of(run)[0], None, Path("."), study.name)
            except ConfigError as e:
                out[run.label] = str(e)
    return out


def run_study(study: Study, seeds=None, backend: str | None = None, runs_dir=None, results_dir=None,
              only=None, argv=None, log=print) -> dict:
    """Run (or resume) every job of ``study`` and write the summary; returns the summary."""
    jobs = plan(study, seeds, backend, runs_dir, results_dir, only)
    argv = list(sys.argv[1:] if argv is None else argv)
    command = ["python", "-m", "minilooped.experiments", *map(shlex.quote, argv)]
    invocation = {"seeds": sorted({j.seed for j in jobs}), "backend": backend}  # None: each config's own
    t0 = time.perf_counter()
    for i, job in enumerate(jobs, 1):
        where = f"[{i}/{len(jobs)}] {study.name}: {job.run.label} seed {job.seed}"
        if job.result_path.is_file():
            _check_done(job, log, where)
            continue
        missing = [n for n in job.run.needs if _status(job.result_path_of(n)) != "finished"]
        if missing:
            log(f"{where}: skipped, it needs run(s) {missing} at seed {job.seed}, which did not finish")
            continue
        log(f"{where}: {'evaluating' if job.run.evaluate else 'training'} in {job.run_dir}")
        start = time.perf_counter()
        result = run_job(job, log)
        result["provenance"] = {**provenance(command), **invocation,
                                "wall_time_s": round(time.perf_counter() - start, 3)}
        atomic_write_json(job.result_path, result)
        log(f"{where}: {result['status']}, val loss {result['measurements'].get('final_val_loss')}")
    results = read_results(jobs[0].results_dir) if jobs else {}
    summary = summarise(study, {label: {seed: r for seed, r in by_seed.items() if r.get("study") == study.name}
                                for label, by_seed in results.items()})
    summary["provenance"] = {**provenance(command), **invocation, "wall_time_s": round(time.perf_counter() - t0, 3),
                             "estimated_s": round(study_seconds(jobs), 1)}  # cost.py's estimate, to compare
    if jobs:  # compact: a study's curves over all its runs make a few hundred kB of numbers
        atomic_write_text(jobs[0].results_dir / "summary.json", json.dumps(summary) + "\n")
    return summary


def _status(path: Path) -> str | None:
    return json.loads(path.read_text(encoding="utf-8")).get("status") if path.is_file() else None


def _check_done(job: Job, log, where: str) -> None:
    """A finished job is skipped; say so, and refuse a result of the other version of the study."""
    done = json.loads(job.result_path.read_text(encoding="utf-8"))
    if done.get("reduced") != job.study.is_reduced:
        raise ValueError(f"{job.result_path} holds a result of the {'reduced' if done.get('reduced') else 'full'} "
                         f"study {done.get('study')!r}: give the {'full' if done.get('reduced') else 'reduced'} "
                         "one its own --out_dir")
    if done.get("overrides") != _jsonable(job.run.overrides):
        log(f"{where}: done already, but with other settings than the study's now ({job.result_path}); "
            "delete that file (and the run folder) to run it again")
    else:
        log(f"{where}: done already ({job.result_path})")


def run_job(job: Job, log=print) -> dict:
    """Train (resuming when a checkpoint exists) and measure one job; its result, without provenance."""
    result = {"study": job.study.name, "label": job.run.label, "seed": job.seed, "reduced": job.study.is_reduced,
              "config_name": job.run.config, "overrides": _jsonable(job.run.overrides)}
    if job.run.evaluate is not None:
        return {**result, "status": "finished", "measurements": job.run.evaluate(job)}
    cfg = job.cfg
    if job.run.prepare is not None:
        cfg = apply_overrides(cfg, job.run.prepare(job))
    cfg = _resumable(cfg, log)
    status, note = "finished", None
    try:
        try:
            train(cfg)
        except CheckpointError as e:  # the study changed since the checkpoint was written
            log(f"note: cannot resume {job.run_dir} ({e}); training it afresh")
            cfg = replace(cfg, resume=False)
            train(cfg)
    except TrainingDiverged as e:  # a result too: which settings diverge is what chapter 6 measures
        status, note = "diverged", str(e)
    trained = Trained(cfg, job.run_dir)
    try:
        measurements = measure(trained, (*DEFAULT_MEASUREMENTS, *job.study.measurements),
                               diverged=status == "diverged")
    finally:
        trained.close()
    result.update(status=status, config=cfg.to_dict(), measurements=measurements)
    if note:
        result["note"] = note
    return result


def _resumable(cfg: TrainConfig, log) -> TrainConfig:
    ckpt = latest_checkpoint(cfg.out_dir)
    if ckpt is None:
        return replace(cfg, resume=False)
    log(f"resuming from {ckpt}")
    return replace(cfg, resume=True)


__all__ = ["run_study", "run_job", "plan", "unavailable_runs", "Job", "config_of", "default_results_dir", "default_runs_dir", "root"]
