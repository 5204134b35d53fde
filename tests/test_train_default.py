"""The default run, reduced: scripts/run_default_training.py --quick trains the default
config for 30 steps with both implementations and both end below the unigram baseline.
The full run's committed results (book/data/training/) are checked for the same."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_default_run_beats_the_unigram_baseline(tmp_path):
    pytest.importorskip("torch")
    proc = subprocess.run([sys.executable, "scripts/run_default_training.py", "--quick", "--out", str(tmp_path / "out"),
                           "--runs-dir", str(tmp_path / "runs")], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "default_summary.json").read_text())
    assert summary["quick"] and set(summary["runs"]) == {"numpy", "torch"}
    for backend, run in summary["runs"].items():
        assert run["steps"] == 30
        assert run["final_val_loss"] < run["unigram_entropy"], (backend, run)
        assert (tmp_path / "out" / f"default_{backend}.jsonl").is_file()
        assert run["sample"].strip()
    a, b = (summary["runs"][k]["final_val_loss"] for k in ("numpy", "torch"))
    assert abs(a - b) < 0.1  # different inits, same recipe


def test_committed_full_run_results():
    path = REPO / "book" / "data" / "training" / "default_summary.json"
    if not path.exists():
        pytest.skip("the full default run has not been committed yet (scripts/run_default_training.py)")
    summary = json.loads(path.read_text())
    assert not summary["quick"]
    for backend in ("numpy", "torch"):
        run = summary["runs"][backend]
        assert run["final_val_loss"] < run["unigram_entropy"] - 0.5  # far below
        assert (path.parent / f"default_{backend}.jsonl").is_file()
