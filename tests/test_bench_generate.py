"""``python -m minilooped.bench generate``: runs and reports (tiny models; no timing assertions)."""
import json

import pytest

from minilooped.bench import generate as bench


def test_bench_generate_quick_reports(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    # the workers in this process instead of fresh ones (which only set the threads): seconds
    monkeypatch.setattr(bench, "_subprocess", lambda args: bench.worker(**args))
    out = tmp_path / "gen.json"
    bench.main(["--quick", "--json", str(out)])
    assert "vs transformers" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["provenance"]["command"].startswith("python -m minilooped.bench generate --quick")
    rows = report["results"]
    assert {(r["model"], r["impl"]) for r in rows} == {
        ("tiny-gpt2", "core"), ("tiny-gpt2", "mirror"), ("tiny-gpt2", "transformers"),
        ("tiny-loop-residual", "core"), ("tiny-loop-residual", "mirror")}
    assert {(r["prompt"], r["cache"]) for r in rows} == {(8, True), (8, False), (32, True), (32, False)}
    for r in rows:
        assert r["tokens_per_s"] > 0 and r["new_tokens"] == (4 if r["cache"] else 2)
        assert (r["ratio_vs_transformers"] is None) == (r["model"] == "tiny-loop-residual")


def test_bench_generate_bad_arguments():
    with pytest.raises(SystemExit, match="unknown implementation"):
        bench.main(["--quick", "--impls", "core,jax"])
    with pytest.raises(ValueError, match="unknown preset"):
        bench.main(["--models", "gpt2-7b"])
