"""Loss against depth (training/evaluation.py, ``python -m minilooped.evaluate``) and the
val loss at several loop counts during training (TrainConfig.eval_loops)."""
import json
import math

import numpy as np
import pytest

from minilooped.models import GPTConfig
from minilooped.training import CheckpointError, ConfigError, train
from minilooped.training.cli import evaluate_main
from minilooped.training.evaluation import (EvalConfig, depths_for, evaluate_depths, fit_depth_curve,
                                            saturating_exp)
from minilooped.training.metrics import read_jsonl
from _train_utils import losses, tiny_config, tiny_data

LOOPED = {"n_embd": 32, "n_head": 2, "n_loops": 4, "block_size": 16}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tiny_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def looped_run(data_dir, tmp_path_factory):
    """Loop-Residual trained 30 steps at 4 loops, logging the val loss at 1, 2 and 4 loops."""
    run = tmp_path_factory.mktemp("looped")
    train(tiny_config(data_dir, run, max_iters=30, eval_interval=15, model_args=LOOPED, eval_loops="4,1,2"))
    return run


@pytest.fixture(scope="module")
def gpt2_run(data_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("gpt2")
    train(tiny_config(data_dir, run, model="shakespeare-gpt2", max_iters=2, eval_interval=2,
                      model_args={"n_embd": 32, "n_head": 2, "n_layer": 1, "block_size": 16}))
    return run


# ---------------------------------------------------------------- the command line
def test_cli_prints_every_depth_and_a_fit(looped_run, tmp_path, capsys):
    out = tmp_path / "depths.json"
    assert evaluate_main([str(looped_run), "--n_loops=1,2,3,4", f"--json={out}"]) == 0
    printed = capsys.readouterr().out
    rows = [line.split() for line in printed.splitlines() if line.strip()[:1].isdigit()]
    assert [r[0].rstrip("*") for r in rows] == ["1", "2", "3", "4"]
    assert rows[-1][0] == "4*"  # the training loop count is marked
    assert "fit L(T) = L_inf + A exp(-T / tau) over 4 depths" in printed and "RMS residual" in printed
    result = json.loads(out.read_text())
    assert result["fit"]["fitted"] and result["fit"]["A"] > 0 and result["fit"]["tau"] > 0
    assert result["provenance"]["command"].startswith("python -m minilooped.evaluate")
    assert [d["n_loops"] for d in result["depths"]] == [1, 2, 3, 4]
    flops = [d["flops_per_token"] for d in result["depths"]]
    assert flops[0] < flops[1] < flops[2] < flops[3]  # each loop costs its blocks' FLOPs again
    assert all(d["tokens_per_s"] > 0 for d in result["depths"])


def test_same_batches_as_the_runs_val_loss(looped_run):
    """At the run's seed and batch size the batches are estimate_loss's: the loss at the
    training loop count is the run's last logged val loss (a deterministic model)."""
    result = evaluate_depths(EvalConfig(out_dir=str(looped_run), n_loops="4"))
    assert result["depths"][0]["val_loss"] == pytest.approx(result["logged_val_loss"], rel=1e-6)
    assert result["fit"] == {"fitted": False, "reason": result["fit"]["reason"]}
    assert "1 depth" in result["fit"]["reason"]


def test_numpy_and_torch_give_the_same_losses(looped_run):
    pytest.importorskip("torch")
    core = evaluate_depths(EvalConfig(out_dir=str(looped_run), n_loops="1,2,5", backend="numpy"))
    mirror = evaluate_depths(EvalConfig(out_dir=str(looped_run), n_loops="1,2,5", backend="torch"))
    a = [d["val_loss"] for d in core["depths"]]
    b = [d["val_loss"] for d in mirror["depths"]]
    np.testing.assert_allclose(a, b, rtol=2e-5)  # float32 in both
    assert [d["flops_per_token"] for d in core["depths"]] == [d["flops_per_token"] for d in mirror["depths"]]


def test_parcae_repeats_its_random_initial_state(data_dir, tmp_path):
    run = tmp_path / "parcae"
    train(tiny_config(data_dir, run, model="shakespeare-parcae", max_iters=4, eval_interval=4,
                      model_args={"n_embd": 32, "n_head": 2, "n_loops": 3, "block_size": 16}))
    first = evaluate_depths(EvalConfig(out_dir=str(run), n_loops="1,2,3,5"))
    again = evaluate_depths(EvalConfig(out_dir=str(run / "ckpt_0000004"), n_loops="1,2,3,5"))
    assert [d["val_loss"] for d in first["depths"]] == [d["val_loss"] for d in again["depths"]]


def test_a_gpt2_model_runs_at_depth_one_only(gpt2_run, capsys):
    assert evaluate_main([str(gpt2_run), "--n_loops=1,2,4"]) == 0
    printed = capsys.readouterr().out
    assert "skipped n_loops=2" in printed and "skipped n_loops=4" in printed
    assert "no fit: the model is not looped" in printed


# ---------------------------------------------------------------- refusals
@pytest.mark.parametrize("argv, message", [
    (["--n_loops=0,2"], "must be >= 1"),
    (["--n_loops=1,two"], "comma-separated positive integers"),
    (["--n_loops="], "is empty"),
    (["--depth=3"], "unknown evaluate key --depth"),
])
def test_bad_arguments_are_refused(looped_run, argv, message, capsys):
    assert evaluate_main([str(looped_run), *argv]) in (1, 2)
    assert message in capsys.readouterr().err


def test_neither_a_run_nor_a_checkpoint(tmp_path, capsys):
    assert evaluate_main([str(tmp_path)]) == 1
    assert "neither a run folder" in capsys.readouterr().err
    assert evaluate_main([str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert evaluate_main([]) == 2
    assert "give the run folder" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="neither a run folder"):
        evaluate_depths(EvalConfig(out_dir=str(tmp_path)))


def test_recursive_depths_past_its_loops_are_skipped_with_a_note():
    config = GPTConfig(variant="recursive", n_layer=2, n_loops=3, n_embd=8, n_head=2, block_size=8, vocab_size=11)
    depths, skipped = depths_for(config, [1, 2, 4, 8])
    assert depths == [1, 2]
    assert [s["n_loops"] for s in skipped] == [4, 8] and "n_loops=3" in skipped[0]["reason"]


# ---------------------------------------------------------------- the fit
def test_fit_recovers_known_parameters():
    T = [1, 2, 3, 4, 6, 8, 12, 16]
    exact = fit_depth_curve(T, saturating_exp(T, 2.0, 1.5, 3.0))
    assert exact["fitted"]
    assert (exact["L_inf"], exact["A"], exact["tau"]) == pytest.approx((2.0, 1.5, 3.0), rel=1e-6)
    assert exact["rms_residual"] < 1e-8
    noise = np.random.default_rng(0).normal(0.0, 2e-3, size=len(T))
    noisy = fit_depth_curve(T, saturating_exp(T, 2.0, 1.5, 3.0) + noise)
    for name, true in (("L_inf", 2.0), ("A", 1.5), ("tau", 3.0)):
        assert abs(noisy[name] - true) < 4 * noisy["stderr"][name], name  # within 4 standard errors
    assert 2e-4 < noisy["rms_residual"] < 4e-3  # about the noise, 2e-3, less what 3 parameters absorb


@pytest.mark.parametrize("losses_, reason", [
    ([3.0, 2.5, 2.4], "the 3 parameters need at least 4"),
    ([3.0, 2.5, 2.4, 2.45], "the curve rises"),  # the deepest is 0.05 above the lowest
    ([2.5, 2.5, 2.5, 2.5], "the curve is flat"),
    ([3.0, math.nan, 2.4, 2.3], "not finite"),
    ([2.0, 2.1, 2.2, 2.2], "rises"),
])
def test_no_fit_where_it_would_mean_nothing(losses_, reason):
    fit = fit_depth_curve([1, 2, 4, 8][:len(losses_)], losses_)
    assert not fit["fitted"] and reason in fit["reason"]


def test_a_curve_that_does_not_decay_is_not_fitted():
    """Within rise_tol at the end, but increasing: the fit's A is negative, which is reported."""
    fit = fit_depth_curve([1, 2, 4, 8], [2.000, 2.0005, 2.001, 2.0015])
    assert not fit["fitted"] and "does not decay" in fit["reason"]


# ---------------------------------------------------------------- eval_loops during training
def test_eval_loops_are_logged_on_the_val_batches(looped_run):
    evals = [r for r in read_jsonl(looped_run / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 15, 30]
    for r in evals:
        assert list(r["val_loss_loops"]) == ["1", "2", "4"]
        assert r["val_loss_loops"]["4"] == pytest.approx(r["val_loss"], rel=1e-6)  # 4 = the training depth


def test_eval_loops_do_not_change_a_parcae_run(data_dir, tmp_path):
    """The extra depths draw Parcae's h_0 from the engine's generator, which is put back after."""
    args = dict(model="shakespeare-parcae", max_iters=6, eval_interval=2,
                model_args={"n_embd": 32, "n_head": 2, "n_loops": 3, "block_size": 16})
    train(tiny_config(data_dir, tmp_path / "a", **args))
    train(tiny_config(data_dir, tmp_path / "b", eval_loops="1,5", **args))
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert losses(tmp_path / "a", "eval", "val_loss") == losses(tmp_path / "b", "eval", "val_loss")


@pytest.mark.parametrize("model, model_args, eval_loops, message", [
    ("shakespeare-gpt2", {}, "1,2", "variant='gpt2'"),
    ("shakespeare-loop-residual", {"variant": "recursive", "n_loops": 2}, "1,4", "can only exit early"),
    ("shakespeare-loop-residual", {}, "1,x", "comma-separated positive integers"),
    ("shakespeare-loop-residual", {}, "0", "must be >= 1"),
])
def test_bad_eval_loops_are_refused(data_dir, tmp_path, model, model_args, eval_loops, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(data_dir, tmp_path, model=model, model_args=model_args, eval_loops=eval_loops)


def test_eval_loops_is_explained_in_help(capsys):
    from minilooped.training.cli import train_main

    train_main(["--help"])
    line = next(l for l in capsys.readouterr().out.splitlines() if "--eval_loops" in l)
    assert "val loss" in line and "loop counts" in line


def test_a_decay_over_before_the_first_depth_is_not_fitted():
    """Parcae on Shakespeare: saturated by loop 1 or 2, a few 1e-4 nats of noise after. Any
    tau below ~0.3 fits; the standard errors say so, and no parameters are reported."""
    T = [1, 2, 4, 8, 16, 32]
    L = [1.8755, 1.8716, 1.8724, 1.8727, 1.8727, 1.8727]  # measured (the closing note of issue 12)
    fit = fit_depth_curve(T, L)
    assert not fit["fitted"] and "do not determine" in fit["reason"] and "tau" not in fit
    clean = fit_depth_curve(T, [1.87 + 0.5 * math.exp(-t / 3) for t in T])  # a decay the depths see
    assert clean["fitted"] and abs(clean["tau"] - 3) < 1e-3
