"""The studies framework (minilooped.experiments): every study's reduced version runs end to end
and writes results with provenance; finished runs are skipped; an interrupted run resumes
exactly; the summary's statistics equal NumPy's; bad input is refused with a clear message.

The reduced studies train on Shakespeare (prepared in data_cache/ on first use). Select
them with ``pytest tests/test_experiments.py -k reduced``; each takes seconds.
"""
import json
import math

import numpy as np
import pytest

from minilooped.experiments import REDUCED, STUDIES, Run, Study, grid, load, plan, run_study, stats
from minilooped.experiments.cli import main, parse_seeds
from minilooped.experiments.runner import unavailable_runs
from minilooped.training import ConfigError, train
from minilooped.training.metrics import read_jsonl

PROVENANCE = ("command", "commit", "uncommitted_changes", "machine", "date", "seeds", "wall_time_s")


def _quiet(*a, **k):
    pass


def _dirs(tmp_path, name="s"):
    return dict(runs_dir=tmp_path / f"{name}-runs", results_dir=tmp_path / f"{name}-results")


# ---------------------------------------------------------------------- --list
def test_list_names_every_study_with_its_cost(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for name, study in STUDIES.items():
        assert name in out and study.chapter in out
    assert out.count("on 2 CPU cores") == len(STUDIES)
    assert len(STUDIES) >= 6  # chapters 5-10


# ---------------------------------------------------------------------- every study, reduced
@pytest.mark.slow
@pytest.mark.parametrize("name", list(STUDIES))
def test_reduced_study_runs_end_to_end_and_resumes(tmp_path, name):
    study = STUDIES[name].reduced()
    missing = unavailable_runs(study)  # runs that need fields other work adds (see studies.py)
    only = [r.label for r in study.runs if r.label not in missing]
    assert only, f"no run of {name} can be built: {missing}"
    dirs = _dirs(tmp_path)
    summary = run_study(study, only=only, argv=[name, "--reduced"], log=_quiet, **dirs)

    jobs = plan(study, only=only, **dirs)
    for job in jobs:
        result = json.loads(job.result_path.read_text())
        assert result["status"] == "finished", (job.run.label, result.get("note"))
        p = result["provenance"]
        assert all(k in p for k in PROVENANCE) and p["command"] == f"python -m minilooped.experiments {name} --reduced"
        assert p["commit"] is None or len(p["commit"]) == 40
        m = result["measurements"]
        if job.run.evaluate is not None:  # no training: the hook's own measurements
            assert m and all(v is None or isinstance(v, (int, float, list, dict)) for v in m.values())
            continue
        assert math.isfinite(m["final_val_loss"]) and m["params"] > 0 and m["ms_per_step"] > 0
        assert m["loss_curve"]["step"] == [0, 3, 6] and len(m["train_curve"]["grad_norm"]) == 6
        depths = m.get("val_loss_by_loops")
        cfg = job.cfg.model_config()
        if depths and cfg.variant not in ("gpt2", "parcae"):  # parcae's eval draws h_0: not repeatable
            # the depth measurement uses the training loop's val batches: at the trained depth it
            # reproduces the last logged val loss
            at = dict(zip(depths["loops"], depths["val_loss"]))
            if cfg.n_loops in at:
                assert at[cfg.n_loops] == pytest.approx(m["final_val_loss"], rel=1e-6)
    assert set(summary["runs"]) == {r.label for r in study.runs}
    assert json.loads((dirs["results_dir"] / "summary.json").read_text())["study"] == name
    trained = next((j.run.label for j in jobs if j.run.evaluate is None), None)  # a run with a training curve
    if trained is not None:
        assert load(name, dirs["results_dir"]).get(trained, "final_val_loss")["n"] == 1

    # a second invocation trains nothing
    said = []
    mtimes = {j.result_path: j.result_path.stat().st_mtime_ns for j in jobs}
    run_study(study, only=only, argv=[name, "--reduced"], log=said.append, **dirs)
    assert sum("done already" in s for s in said) == len(jobs)
    assert {j.result_path: j.result_path.stat().st_mtime_ns for j in jobs} == mtimes


def test_reduced_results_never_go_to_the_book():
    from minilooped.experiments.runner import default_results_dir

    assert "book" not in default_results_dir("loop_residual", reduced=True).parts
    assert default_results_dir("loop_residual", reduced=False).parts[-3:] == ("data", "experiments", "loop_residual")
    job = plan(STUDIES["loop_residual"].reduced(), only=["lite"])[0]
    assert "book" not in job.result_path.parts and "runs" in job.run_dir.parts


# ---------------------------------------------------------------------- resume
def _one_run_study(**over):
    return Study("resume", measures="resume test", seeds=(0,),
                 runs=(Run("looped", overrides={**REDUCED, "n_loops": 2, **over}),),
                 measurements=(("val_loss_by_loops", {"loops": [1, 2]}),))


def test_interrupted_run_resumes_exactly(tmp_path):
    study = _one_run_study()
    whole = run_study(study, log=_quiet, **_dirs(tmp_path, "whole"))
    dirs = _dirs(tmp_path, "cut")
    job = plan(study, **dirs)[0]
    # the study was killed after the checkpoint of step 3: half the steps, the same lr schedule
    train(job.cfg.__class__(**{**job.cfg.to_dict(), "max_iters": 3, "lr_decay_iters": 6}))
    assert not job.result_path.exists()
    said = []
    resumed = run_study(study, log=said.append, **dirs)
    assert any("resuming" in s for s in said)
    assert [r["kind"] for r in read_jsonl(job.run_dir / "metrics.jsonl")].count("resume") == 1
    a = whole["runs"]["looped"]["measurements"]
    b = resumed["runs"]["looped"]["measurements"]
    for key in ("final_val_loss", "loss_curve", "train_curve", "val_loss_by_loops"):
        assert _means(a[key]) == _means(b[key]), key  # bit for bit


def test_lost_result_is_measured_again_from_the_checkpoint(tmp_path):
    study = _one_run_study()
    dirs = _dirs(tmp_path)
    first = run_study(study, log=_quiet, **dirs)
    job = plan(study, **dirs)[0]
    job.result_path.unlink()  # e.g. killed between the last checkpoint and the result file
    second = run_study(study, log=_quiet, **dirs)
    steps = [r["step"] for r in read_jsonl(job.run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == list(range(6))  # no step trained twice
    a, b = first["runs"]["looped"]["measurements"], second["runs"]["looped"]["measurements"]
    assert a["val_loss_by_loops"] == b["val_loss_by_loops"] and a["final_val_loss"] == b["final_val_loss"]


def _means(s):
    if "mean" in s:
        return s["mean"]
    return {k: _means(v) for k, v in s.items()}


# ---------------------------------------------------------------------- summary
def test_stats_equal_numpy_on_known_numbers():
    xs = [1.5, 2.0, 4.25]
    s = stats(xs)
    assert s["mean"] == pytest.approx(np.mean(xs)) and s["std"] == pytest.approx(np.std(xs, ddof=1))
    assert (s["min"], s["max"], s["n"]) == (1.5, 4.25, 3)
    assert stats([3.0]) == {"mean": 3.0, "std": 0.0, "min": 3.0, "max": 3.0, "n": 1}
    assert stats([None, float("nan")])["n"] == 0 and stats([None])["mean"] is None
    # lists elementwise; a shorter list (a run that diverged early) counts where it has values
    rows = [[1.0, 2.0, 3.0], [3.0, 6.0], [5.0, None, 9.0]]
    s = stats(rows)
    assert s["n"] == [3, 2, 2]
    assert s["mean"] == pytest.approx([3.0, 4.0, 6.0])
    assert s["std"] == pytest.approx([np.std([1, 3, 5], ddof=1), np.std([2, 6], ddof=1), np.std([3, 9], ddof=1)])
    # dicts key by key, and nested
    s = stats([{"a": 1.0, "b": {"c": [1.0]}}, {"a": 2.0, "b": {"c": [3.0]}}])
    assert s["a"]["mean"] == 1.5 and s["b"]["c"]["mean"] == [2.0]


def test_a_study_in_a_few_lines_with_an_evaluate_step(tmp_path):
    """A run may be a function instead of a training; the summary spans its seeds."""
    study = Study("tiny", measures="seed arithmetic", seeds=(0, 1, 2),
                  runs=(Run("square", evaluate=lambda job: {"x": job.seed ** 2, "xs": [job.seed, 1.0]}),))
    summary = run_study(study, log=_quiet, **_dirs(tmp_path))
    x = summary["runs"]["square"]["measurements"]["x"]
    assert x["mean"] == pytest.approx(np.mean([0, 1, 4])) and x["std"] == pytest.approx(np.std([0, 1, 4], ddof=1))
    assert summary["runs"]["square"]["measurements"]["xs"]["mean"] == [1.0, 1.0]
    r = load("tiny", _dirs(tmp_path)["results_dir"])
    assert r.values("square", "x") == {0: 0, 1: 1, 2: 4} and r.get("square", "xs")["n"] == [3, 3]


def test_a_diverged_run_is_recorded_not_fatal(tmp_path):
    study = Study("boom", measures="divergence", seeds=(0,), runs=(
        Run("boom", overrides={**REDUCED, "learning_rate": 1e4, "min_lr": 1e3, "grad_clip": 0.0, "warmup_iters": 0}),))
    with np.errstate(all="ignore"):
        summary = run_study(study, log=_quiet, **_dirs(tmp_path))
    run = summary["runs"]["boom"]
    assert run["diverged"] == [0] and run["finished"] == []
    assert run["measurements"]["final_val_loss"]["n"] == 0  # null, left out
    assert run["measurements"]["loss_curve"]["val_loss"]["n"][0] == 1  # the curve up to the divergence stays
    result = json.loads((_dirs(tmp_path)["results_dir"] / "runs/boom/seed0.json").read_text())
    assert result["status"] == "diverged" and "diverged" in result["note"]


def test_grid_labels_and_learning_rates():
    runs = grid({"a": {"n_loops": 2}, "b": {"config": "shakespeare-gpt2"}}, lrs=(1e-3, 4e-3), lr_seeds=(0,),
                max_iters=10)
    assert [r.label for r in runs] == ["a_lr0.001", "a_lr0.004", "b_lr0.001", "b_lr0.004"]
    assert runs[0].overrides == {"max_iters": 10, "n_loops": 2, "learning_rate": 1e-3, "min_lr": 1e-4}
    assert runs[2].config == "shakespeare-gpt2" and runs[0].seeds == (0,)


# ---------------------------------------------------------------------- errors
def test_unknown_study_suggests_the_close_name(capsys):
    with pytest.raises(SystemExit):
        main(["loop_residul"])
    assert "did you mean 'loop_residual'" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["a,b", "1,1", "-1", "0,,1"])
def test_bad_seeds_are_refused(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="seeds"):
        parse_seeds(text)


def test_bad_seeds_on_the_command_line(capsys):
    with pytest.raises(SystemExit):
        main(["loop_residual", "--reduced", "--seeds=x"])
    assert "--seeds='x'" in capsys.readouterr().err


def test_bad_studies_are_refused():
    with pytest.raises(ValueError, match="needs 'b', which must be a run listed before it"):
        Study("s", "m", runs=(Run("a", needs=("b",)), Run("b")))
    with pytest.raises(ValueError, match="appear more than once"):
        Study("s", "m", runs=(Run("a"), Run("a")))
    with pytest.raises(ValueError, match="use letters"):
        Run("a/b")
    with pytest.raises(ValueError, match="did you mean 'final_val_loss'"):
        plan(Study("s", "m", runs=(Run("a"),), measurements=("final_val_los",)))
    with pytest.raises(ValueError, match="has no run 'c'"):
        plan(Study("s", "m", runs=(Run("a"),)), only=["c"])
    with pytest.raises(ConfigError, match=r"study 's', run 'a'.*n_loop"):
        plan(Study("s", "m", runs=(Run("a", overrides={"n_loop": 2}),)))


def test_cli_runs_a_reduced_study_into_the_given_folders(tmp_path, capsys):
    out, runs = tmp_path / "out", tmp_path / "runs"
    assert main(["loop_residual", "--reduced", "--only=lite", "--seeds=0,1", f"--out_dir={out}",
                 f"--runs_dir={runs}"]) == 0
    r = load("loop_residual", out)
    assert sorted(r.results["lite"]) == [0, 1] and r.get("lite", "final_val_loss")["n"] == 2
    assert r.summary["provenance"]["seeds"] == [0, 1] and r.summary["reduced"] is True
    assert (runs / "lite" / "seed1" / "metrics.jsonl").is_file()


def test_reduced_and_full_results_never_mix(tmp_path):
    dirs = _dirs(tmp_path)
    run_study(STUDIES["loop_residual"].reduced(), only=["lite"], log=_quiet, **dirs)
    with pytest.raises(ValueError, match="reduced.*its own --out_dir"):
        run_study(STUDIES["loop_residual"], only=["lite"], seeds=[0], log=_quiet, **dirs)


def test_best_rate_of_each_variant(tmp_path):
    loss = {"a_lr0.001": 2.0, "a_lr0.004": 1.5, "b_lr0.001": 1.8, "b_lr0.004": None}  # None: diverged
    study = Study("sweep", measures="best lr", seeds=(0, 1), runs=tuple(
        Run(label, evaluate=lambda job, v=v: {"final_val_loss": v}) for label, v in loss.items()))
    run_study(study, log=_quiet, **_dirs(tmp_path))
    assert load("sweep", _dirs(tmp_path)["results_dir"]).best() == {"a": "a_lr0.004", "b": "b_lr0.001"}


def test_every_full_study_is_estimated_within_two_hours_on_two_cores():
    from minilooped.experiments.cost import estimate, step_ms
    from minilooped.models import GPTConfig

    # the fit in cost.py's docstring: 10 ms + 11.7 ms per MFLOP/token of a looped model
    default = GPTConfig.from_preset("shakespeare-loop-residual", vocab_size=80)  # 5.21472 MFLOP/token, as logged
    assert step_ms(default, 16 * 64) == pytest.approx(10 + 11.7 * 5.21472, rel=1e-4)
    assert step_ms(default, 16 * 64, "torch") == pytest.approx(step_ms(default, 16 * 64) / 2)
    for name, study in STUDIES.items():
        seconds, jobs, _ = estimate(study)
        assert len(jobs) == sum(len(study.seeds_of(r)) for r in study.runs)
        # part I's leaderboard is the smallest: 300 steps a model (its MLP runs, estimated as set-up
        # only, take ~15 s each)
        assert (60 if name == "part1_leaderboard" else 600) < seconds <= 2 * 3600, (name, seconds)


def test_train_curve_bins_keep_means_and_spikes(tmp_path):
    from minilooped.experiments.measurements import train_curve
    from minilooped.training.metrics import MetricsLogger

    norms = [1.0, 9.0, 2.0, 2.0, 3.0]
    with MetricsLogger(tmp_path / "metrics.jsonl") as log:
        log.log("start", params=1)
        for step, g in enumerate(norms):
            log.log("train", step=step, loss=float(step), grad_norm=g, lr=0.1, dt_ms=1.0, n_loops=step % 2 + 1)

    from types import SimpleNamespace

    from minilooped.training.results import load_run

    c = train_curve(SimpleNamespace(log=load_run(tmp_path)), points=3)  # what it reads of a Trained  # bins of 2 steps: [0, 1], [2, 3], [4]
    assert c["step"] == [0, 2, 4]
    assert c["grad_norm"] == [5.0, 2.0, 3.0] and c["grad_norm_max"] == [9.0, 2.0, 3.0]
    assert c["loss"] == [0.5, 2.5, 4.0] and c["n_loops"] == [1.5, 1.5, 1.0]
    assert "lr" not in c and "dt_ms" not in c


def test_a_run_that_needs_an_unfinished_run_waits(tmp_path):
    said = []
    study = Study("needs", measures="order", seeds=(0,), runs=(
        Run("source", overrides={**REDUCED, "learning_rate": 1e4, "min_lr": 1e3, "grad_clip": 0.0, "warmup_iters": 0}),
        Run("user", evaluate=lambda job: {"x": 1}, needs=("source",))))
    with np.errstate(all="ignore"):
        summary = run_study(study, log=said.append, **_dirs(tmp_path))
    assert summary["runs"]["source"]["diverged"] == [0] and summary["runs"]["user"]["seeds"] == []
    assert any("needs run(s) ['source']" in s for s in said)
