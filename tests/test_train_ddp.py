"""DDP: 2 processes under torchrun (gloo on the CPU) follow the loss curve of 1 process
with twice the gradient accumulation.

Both runs see the same micro-batches (every rank draws the whole sequence and keeps every
second one) and average the same gradients, only summed in another order: the losses
agree to float32 rounding. Tolerance: 1e-5 absolute per step (measured: ~1e-7).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minilooped.training import train
from _train_utils import losses, tiny_config, tiny_data

pytest.importorskip("torch")
REPO = Path(__file__).resolve().parents[1]
TOL = 1e-5


@pytest.mark.ddp
@pytest.mark.slow
def test_two_processes_equal_one_with_twice_the_accumulation(tmp_path):
    data_dir = tiny_data(tmp_path / "data")
    two = tiny_config(data_dir, tmp_path / "two", backend="torch", grad_accum=2, max_iters=6, eval_interval=3)
    (tmp_path / "two.json").write_text(json.dumps(two.to_dict()))
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = dict(os.environ, OMP_NUM_THREADS="1")  # 2 processes on 2 cores
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "minilooped.train",
                           str(tmp_path / "two.json")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("step 6: train loss") == 1  # rank 0 alone prints and logs

    train(tiny_config(data_dir, tmp_path / "one", backend="torch", grad_accum=2, max_iters=6, eval_interval=3))
    a, b = losses(tmp_path / "two"), losses(tmp_path / "one")
    assert len(a) == len(b) == 6
    assert max(abs(x - y) for x, y in zip(a, b)) < TOL, (a, b)
    va, vb = losses(tmp_path / "two", "eval", "val_loss"), losses(tmp_path / "one", "eval", "val_loss")
    assert max(abs(x - y) for x, y in zip(va, vb)) < TOL
    start = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()][0]
    assert start["world_size"] == 2


def _torchrun(config_path, extra=()):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "minilooped.train",
                           str(config_path), *extra], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.ddp
@pytest.mark.slow
def test_resume_restores_every_ranks_random_state(tmp_path):
    """With dropout, each rank draws its own masks from its own generator (seeded seed + rank).
    A 2-process run stopped at step 3 and resumed must equal the uninterrupted run exactly,
    which needs rank 1's generator back too, not a copy of rank 0's."""
    data_dir = tiny_data(tmp_path / "data")
    common = dict(backend="torch", grad_accum=2, eval_interval=3, lr_decay_iters=6, dropout=0.1)
    whole = tiny_config(data_dir, tmp_path / "whole", max_iters=6, **common)
    half = tiny_config(data_dir, tmp_path / "half", max_iters=3, **common)
    for cfg, name in ((whole, "whole"), (half, "half")):
        (tmp_path / f"{name}.json").write_text(json.dumps(cfg.to_dict()))
    _torchrun(tmp_path / "whole.json")
    _torchrun(tmp_path / "half.json")
    _torchrun(tmp_path / "half.json", ["--resume", "--max_iters=6"])
    a, b = losses(tmp_path / "whole"), losses(tmp_path / "half")
    assert len(a) == len(b) == 6
    assert a == b, (a, b)  # the same arithmetic in the same order: bit for bit
    from minilooped.training import load_checkpoint

    states = load_checkpoint(tmp_path / "half").state["engine_states"]
    assert len(states) == 2 and states[0]["torch_rng"] != states[1]["torch_rng"]
