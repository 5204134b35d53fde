"""`python -m minilooped.bench ops` runs (in its reduced --quick form) and prints every case."""
import re
import subprocess
import sys


def test_bench_ops_quick_prints_every_case_with_a_ratio():
    out = subprocess.run([sys.executable, "-m", "minilooped.bench", "ops", "--quick", "--repeat", "1"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    for name in ("linear (matmul)", "layer_norm", "softmax + cross_entropy", "embedding",
                 "batched matmul q k^T", "causal attention (fused)", "total"):
        line = next((l for l in out.splitlines() if l.startswith(name)), None)
        assert line is not None, f"no row for {name!r} in:\n{out}"
        # the last column is the ratio core / torch; under load a tiny --quick case can
        # print 0.00, so only its form is checked, not its size
        assert re.fullmatch(r"\d+\.\d\d", line.split()[-1]), line


def test_bench_usage_error_is_clear():
    r = subprocess.run([sys.executable, "-m", "minilooped.bench", "nope"], capture_output=True, text=True)
    assert r.returncode != 0 and "usage: python -m minilooped.bench ops|train" in r.stderr
