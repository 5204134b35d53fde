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
