"""`python -m minilooped.bench exit` on a tiny trained run: it runs and reports every figure."""
import json

from minilooped.bench.exit import format_report, main, run
from minilooped.training import train
from _train_utils import tiny_config, tiny_data


def test_bench_exit_reports_frontier_and_depthwise_batching(tmp_path):
    cfg = tiny_config(tiny_data(tmp_path / "data"), tmp_path / "run", max_iters=4, eval_interval=4,
                      model_args={"n_embd": 16, "n_head": 2, "n_loops": 3, "block_size": 8})
    train(cfg)
    report = run(tmp_path / "run", batches=1, batch_size=2, requests=6, slots=2, log=lambda s: None)
    for criterion in ("kl", "max_prob"):
        f = report["frontier"][criterion]
        assert [p["loops"] for p in f["fixed"]] == [1, 2, 3]
        assert all(1 <= p["mean_loops"] <= 3 for p in f["adaptive"])
    for r in report["depthwise"].values():
        assert r["continuous"]["row_loops"] <= r["static"]["row_loops"] <= r["max_depth"]["row_loops"] == 18
    assert "oracle bound" in format_report(report)
    main(["--run", str(tmp_path / "run"), "--batches", "1", "--batch_size", "2", "--requests", "4", "--slots", "2",
          "--json", str(tmp_path / "exit.json")])
    assert json.loads((tmp_path / "exit.json").read_text())["provenance"]["command"].startswith("python -m")
