"""`python -m minilooped.bench gpu`: refuses without a GPU; runs every part in miniature on
the CPU (--cpu-smoke, NumPy core standing in for CuPy); its checks can fail; on a GPU its
op and parity checks run there (marked gpu)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import minilooped as ml

torch = pytest.importorskip("torch")
from minilooped.bench import gpu  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
needs_gpu = pytest.mark.skipif(not (ml.cuda_available() and torch.cuda.is_available()),
                               reason="needs CuPy, CUDA PyTorch and a GPU")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_refuses_without_a_gpu():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "minilooped.bench", "gpu"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "needs an NVIDIA GPU with a CUDA build of PyTorch" in proc.stderr and "--cpu-smoke" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_cpu_smoke_runs_every_part(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    gpu.main(["--cpu-smoke", f"--json={out}"])  # exits only on failure
    printed = capsys.readouterr().out
    assert "CPU smoke run" in printed and "passed in" in printed
    r = json.loads(out.read_text())
    assert r["provenance"]["command"] == f"python -m minilooped.bench gpu --cpu-smoke --json={out}"
    assert r["smoke"] and r["passed"]
    assert {o["op"] for o in r["a_ops"]} >= {"matmul", "layer_norm", "cross_entropy", "causal attention"}
    assert [p["variant"] for p in r["a_parity"]] == list(gpu.VARIANTS) and all(p["passed"] for p in r["a_parity"])
    assert [m["model"] for m in r["b_mirror"]] == list(gpu.THROUGHPUT_MODELS)
    assert all(c["core"]["engine"] == "numpy" and c["mirror"]["engine"] == "torch" for c in r["c_core_vs_mirror"])
    assert [t["engine"] for t in r["d_train"]] == ["numpy", "torch"]
    assert all(t["steps"] == gpu.SMOKE["train_iters"] and t["val_loss"] < 10.83 for t in r["d_train"])


def test_op_check_catches_a_wrong_op(monkeypatch):
    import minilooped.functional as F

    right = F.gelu
    monkeypatch.setattr(F, "gelu", lambda x: right(x) * 1.0001)
    results = {o["op"]: o["passed"] for o in gpu.check_ops("cpu")}
    assert results["gelu"] is False and results["linear"] is True


@pytest.mark.gpu
@needs_gpu
def test_ops_and_parity_on_the_gpu():
    assert all(o["passed"] for o in gpu.check_ops("cuda"))
    assert all(p["passed"] for p in gpu.check_parity("cuda"))


def test_a_broken_part_is_reported_and_the_others_still_run(monkeypatch, capsys):
    def broken(device, sizes):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(gpu, "measure_mirror", broken)
    monkeypatch.setattr(gpu, "SMOKE", dict(gpu.SMOKE, train_iters=1))
    with pytest.raises(SystemExit) as exit_:
        gpu.main(["--cpu-smoke"])
    assert exit_.value.code == 1
    printed = capsys.readouterr().out
    assert "failed: RuntimeError: no compiler" in printed and "FAILED" in printed
    assert "core / mirror" in printed and "numpy  1 steps" in printed  # (c) and (d) ran
