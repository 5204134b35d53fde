"""Checkpoints are atomic: a run killed while saving leaves the previous checkpoint loadable."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from minilooped.training import CheckpointError, load_checkpoint, train
from minilooped.training import checkpoint as ckpt_mod
from minilooped.training.checkpoint import list_checkpoints
from _train_utils import tiny_config, tiny_data

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tiny_data(tmp_path_factory.mktemp("data"))


def test_checkpoint_folder_contents(tmp_path, data_dir):
    r = train(tiny_config(data_dir, tmp_path / "run", max_iters=4))
    assert r.checkpoint.name == "ckpt_0000004"
    assert sorted(p.name for p in r.checkpoint.iterdir()) == ["model.safetensors", "optimizer.safetensors",
                                                             "state.json"]
    ck = load_checkpoint(tmp_path / "run")
    assert ck.step == 4 and "transformer.wte.weight" in ck.weights and "lm_head.weight" in ck.weights
    assert any(k.startswith("exp_avg/") for k in ck.optimizer["arrays"])
    assert ck.state["model_config"]["n_embd"] == 32 and ck.state["rng"]["data"]["bit_generator"] == "PCG64"
    # the weights file is the library's: minilooped.io loads it, and so does the mirror
    from minilooped.io import load_safetensors

    assert set(load_safetensors(r.checkpoint / "model.safetensors")) == set(ck.weights)


def test_keep_checkpoints(tmp_path, data_dir):
    train(tiny_config(data_dir, tmp_path / "run", max_iters=8, eval_interval=2, keep_checkpoints=2))
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["ckpt_0000006", "ckpt_0000008"]


def test_failure_while_writing_keeps_the_previous_checkpoint(tmp_path, data_dir, monkeypatch):
    train(tiny_config(data_dir, tmp_path / "run", max_iters=4, lr_decay_iters=8))
    before = load_checkpoint(tmp_path / "run")
    real = ckpt_mod.save_safetensors

    def dies_after_the_weights(obj, path, metadata=None):
        real(obj, path, metadata)
        if Path(path).name == "optimizer.safetensors":
            raise KeyboardInterrupt("killed while writing the checkpoint")

    monkeypatch.setattr(ckpt_mod, "save_safetensors", dies_after_the_weights)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(data_dir, tmp_path / "run", max_iters=8, lr_decay_iters=8, resume=True))
    after = load_checkpoint(tmp_path / "run")
    assert after.step == 4 and after.path == before.path
    for k in before.weights:
        np.testing.assert_array_equal(before.weights[k], after.weights[k])
    assert not list((tmp_path / "run").glob(".tmp-*"))  # the half-written folder was removed


KILLED_RUN = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from _train_utils import tiny_config
    from minilooped.training import checkpoint, train

    real = checkpoint.save_safetensors
    def slow(obj, path, metadata=None):
        real(obj, path, metadata)
        if Path(path).name == "model.safetensors" and "0000008" in str(path):
            Path({marker!r}).write_text("writing")
            time.sleep(120)  # killed here, half way through the checkpoint of step 8
    checkpoint.save_safetensors = slow
    train(tiny_config({data!r}, {out!r}, max_iters=8, eval_interval=4))
""")


def test_sigkill_while_writing_keeps_the_previous_checkpoint(tmp_path, data_dir):
    marker = tmp_path / "marker"
    code = KILLED_RUN.format(tests=str(REPO / "tests"), marker=str(marker), data=data_dir, out=str(tmp_path / "run"))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "the run never reached its second checkpoint"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert list((tmp_path / "run").glob(".tmp-ckpt_0000008-*")), "the kill should leave a half-written folder"
    ck = load_checkpoint(tmp_path / "run")  # ...which loading ignores
    assert ck.step == 4
    # and the run resumes from it
    r = train(tiny_config(data_dir, tmp_path / "run", max_iters=8, eval_interval=4, resume=True))
    assert r.step == 8 and not list((tmp_path / "run").glob(".tmp-*"))


def test_corrupt_checkpoint_is_reported(tmp_path, data_dir):
    r = train(tiny_config(data_dir, tmp_path / "run", max_iters=4))
    (r.checkpoint / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot be read: .*not a readable safetensors file"):
        load_checkpoint(tmp_path / "run")
    (r.checkpoint / "state.json").write_text("{")
    with pytest.raises(CheckpointError, match="state.json is corrupt"):
        load_checkpoint(r.checkpoint)
