"""The performance tools behind appendix A1 run, in reduced form, and record provenance:
`bench kernels`, `bench profile`, and scripts/bench_history.py. Their numbers are not
checked (no timed tests); that they are produced, and produced from the right code, is."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minilooped as ml
import minilooped.functional as F

REPO = Path(__file__).resolve().parents[1]


def _run(args, tmp_path, timeout=900):
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _check_provenance(p):
    assert p["command"].startswith("python") and p["date"] and p["machine"]["cpu_count"] >= 1
    assert p["commit"] is None or len(p["commit"]) == 40


def test_bench_kernels_quick_writes_every_experiment(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "kernels.json"
    stdout = _run(["-m", "minilooped.bench", "kernels", "--quick", "--json", str(out)], tmp_path)
    report = json.loads(out.read_text())
    _check_provenance(report["provenance"])
    from minilooped.bench.kernels import EXPERIMENTS

    for name in EXPERIMENTS:
        assert name in stdout and report[name]["rows"], name
    emb = {r["case"]: r for r in report["embedding"]["rows"]}
    assert all(r["add.at"] > 0 and r["core (embedding_backward)"] > 0 for r in emb.values())
    allocator = report["allocator"]["rows"][0]
    assert allocator["tuned (core)"]["page_faults_per_step"] >= 0


def test_bench_profile_accounts_for_the_step(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "profile.json"
    stdout = _run(["-m", "minilooped.bench", "profile", "--config", "a", "--steps", "1", "--warmup", "1", "--torch",
                   "--json", str(out)], tmp_path)
    assert "linear" in stdout and "aten::" in stdout
    report = json.loads(out.read_text())
    _check_provenance(report["provenance"])
    core = report["core"]
    parts = sum(o["forward"] + o["backward"] for o in core["ops"].values())
    parts += sum(core[k] for k in ("model code", "engine", "clip", "AdamW", "other"))
    assert core["ops"]["linear"]["calls"] == 4 * 4 + 1  # 4 linears per block, 4 blocks, the head
    assert parts == pytest.approx(core["total"], rel=1e-6)


def test_bench_history_measures_a_revision_in_a_worktree(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "history.json"
    _run(["scripts/bench_history.py", "--rev", "HEAD", "--label", "now", "--out", str(out), "--",
          "--config", "a", "--steps", "1", "--warmup", "1", "--threads", "1"], tmp_path)
    record = json.loads(out.read_text())
    assert record["runs"][0]["label"] == "now" and len(record["runs"][0]["commit"]) == 40
    assert record["runs"][0]["result"]["ratio_core_over_mirror"]["a"] > 0
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=REPO, capture_output=True, text=True).stdout
    assert "minilooped-bench-" not in worktrees  # removed again


def test_unfused_ops_compute_what_the_fused_ones_do(monkeypatch):
    """The 'elementary ops' side of the fusion experiment is the same function."""
    from minilooped.bench import kernels

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 8))
    w, b = rng.standard_normal(8), rng.standard_normal(8)
    q, k, v = (rng.standard_normal((2, 3, 5, 4)) for _ in range(3))
    logits, targets = rng.standard_normal((6, 7)), rng.integers(0, 7, size=6)

    def run():
        ts = [ml.Tensor(a, requires_grad=True) for a in (x, w, b, q, k, v, logits)]
        out = (F.layer_norm(ts[0], (8,), ts[1], ts[2]).sum() + F.gelu(ts[0]).sum()
               + (F.scaled_dot_product_attention(ts[3], ts[4], ts[5], is_causal=True) ** 2).sum()
               + F.cross_entropy(ts[6], targets))
        out.backward()
        return [out.item()] + [t.grad for t in ts]
    fused = run()
    for name in ("layer_norm", "gelu", "scaled_dot_product_attention", "cross_entropy"):
        monkeypatch.setattr(F, name, getattr(F, name))  # restored after the test
    kernels.use_unfused_ops()
    unfused = run()
    for a, b_ in zip(fused, unfused):
        np.testing.assert_allclose(a, b_, rtol=1e-9, atol=1e-12)
