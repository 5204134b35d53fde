"""Exact resume: N steps in one run equal N/2 steps + --resume for N/2 more, loss for loss.

The learning-rate schedule is pinned with lr_decay_iters so that the first half (run with
max_iters=N/2) follows the same schedule as the full run. Batches, parameters, AdamW's
moments and step counts, and every random generator come back from the checkpoint, so on
the CPU the losses are bitwise identical.
"""
import numpy as np
import pytest

from minilooped.training import CheckpointError, load_checkpoint, train
from _train_utils import losses, tiny_config, tiny_data

N = 8


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tiny_data(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("backend", ["numpy", "numpy-2-threads", "torch"])
@pytest.mark.parametrize("model", [{}, {"model": "shakespeare-parcae", "model_args": {"n_embd": 32, "n_head": 2,
                                                                                       "block_size": 16, "dropout": 0.1}}],
                         ids=["loop-residual", "parcae-with-dropout"])
def test_resume_continues_exactly(tmp_path, data_dir, backend, model):
    if model and backend == "torch":
        pytest.importorskip("torch")
    threads = dict(threads=2) if backend == "numpy-2-threads" else {}  # the batch split across threads
    common = dict(backend=backend.split("-")[0], lr_decay_iters=N, eval_interval=N // 2, **threads, **model)
    full = train(tiny_config(data_dir, tmp_path / "full", max_iters=N, **common))
    half = train(tiny_config(data_dir, tmp_path / "resumed", max_iters=N // 2, **common))
    assert half.step == N // 2 and load_checkpoint(tmp_path / "resumed").step == N // 2
    resumed = train(tiny_config(data_dir, tmp_path / "resumed", max_iters=N, resume=True, **common))
    assert resumed.step == N
    assert losses(tmp_path / "full") == losses(tmp_path / "resumed")  # identical, not just close
    assert len(losses(tmp_path / "resumed")) == N  # the log holds each step once
    assert losses(tmp_path / "full", "eval", "val_loss") == losses(tmp_path / "resumed", "eval", "val_loss")
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "resumed")
    for k in a.weights:
        np.testing.assert_array_equal(a.weights[k], b.weights[k])


def test_resume_across_engines(tmp_path, data_dir):
    """A checkpoint of the core resumes in the mirror: same weights and optimizer files."""
    pytest.importorskip("torch")
    train(tiny_config(data_dir, tmp_path / "run", max_iters=4, lr_decay_iters=8))
    r = train(tiny_config(data_dir, tmp_path / "run", max_iters=8, lr_decay_iters=8, backend="torch", resume=True))
    assert r.step == 8 and np.isfinite(r.val_loss)
    assert load_checkpoint(tmp_path / "run").state["engine"] == "torch"


def test_resume_of_another_config_names_the_differences(tmp_path, data_dir):
    train(tiny_config(data_dir, tmp_path / "run", max_iters=4))
    with pytest.raises(CheckpointError, match=r"(?s)saved for another configuration.*model.n_embd: checkpoint 32, "
                                              r"this run 16.*model.n_head: checkpoint 2, this run 4"):
        train(tiny_config(data_dir, tmp_path / "run", max_iters=8, resume=True,
                          model_args={"n_embd": 16, "n_head": 4, "n_loops": 2, "block_size": 16}))


def test_resume_without_checkpoint(tmp_path, data_dir):
    with pytest.raises(CheckpointError, match="no checkpoint at .*drop --resume"):
        train(tiny_config(data_dir, tmp_path / "empty", resume=True))
