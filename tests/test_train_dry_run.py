"""Every OpenWebText preset's dry run (--dry_run=true): the real model, 2 CPU steps on the
OpenWebText sample, the plan printed, nothing written.

The sample is prepared once by the real preparation (data/owt.py) from a parquet file in
nanoGPT's layout, with nanoGPT's split and seed: checked here too. About 4 minutes for all
presets on 2 shared cores (the 124M models take ~15 s each, most of it allocating AdamW).
"""
import json

import numpy as np
import pytest

from minilooped.training import available_configs, config_from_cli
from minilooped.training.cli import train_main

pytest.importorskip("torch")
pytest.importorskip("datasets")
OWT_PRESETS = [n for n in available_configs() if n.startswith("owt-")]


def test_there_are_owt_presets():
    assert len(OWT_PRESETS) >= 15


@pytest.mark.parametrize("name", OWT_PRESETS)
def test_dry_run(name, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main([name, "--dry_run=true", "--gpu=a100-80gb", f"--out_dir={out}"]) == 0
    printed = capsys.readouterr().out
    cfg = config_from_cli([name])
    for line in ("step 0: loss", "step 1: loss", "tokens per step", f"{cfg.max_iters:,}", "total tokens",
                 "memory per GPU", "activations", "on %d x a100-80gb" % cfg.n_gpus, "step time", "tokens/s",
                 "wall time", "cost", "dry run passed"):
        assert line in printed, (line, printed)
    tokens = cfg.batch_size * cfg.model_config().block_size * cfg.grad_accum
    assert f"= {tokens:,} (" in printed
    losses = [float(line.split("loss ")[1].split()[0]) for line in printed.splitlines() if ": loss " in line]
    assert len(losses) == 2 and all(np.isfinite(losses)) and abs(losses[0] - np.log(50257)) < 1.0  # untrained
    assert not out.exists()  # no checkpoint, no metrics


def test_sample_is_prepared_the_nanogpt_way():
    from minilooped.data.tokenizers import get_gpt2_tokenizer
    from minilooped.training.dry_run import ensure_owt_sample

    folder = ensure_owt_sample(log=lambda *a: None)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["test_size"] == 0.0005 and meta["seed"] == 2357 and meta["tokenizer"] == "gpt2"
    assert meta["documents"] == {"train": 23, "val": 1}  # ceil(0.0005 x 24) documents go to val
    enc = get_gpt2_tokenizer()
    for split in ("train", "val"):
        ids = np.fromfile(folder / f"{split}.bin", dtype=np.uint16)
        assert len(ids) == meta["counts"][split] and ids[-1] == 50256
        assert (ids == 50256).sum() == meta["documents"][split]  # one <|endoftext|> after each document
        assert len(ids) > 1025  # a whole 1024-token window plus its target fits even in val
    val_doc = enc.decode(np.fromfile(folder / "val.bin", dtype=np.uint16)[:-1].tolist())
    import datasets

    reference = datasets.load_dataset("parquet", data_files=str(folder / "parquet" / "sample.parquet"),
                                      split="train", cache_dir=str(folder / "hf_cache_test"))
    reference = reference.train_test_split(test_size=0.0005, seed=2357, shuffle=True)  # nanoGPT's prepare.py
    assert [val_doc] == reference["test"]["text"]


def test_dry_run_refuses_under_torchrun(monkeypatch):
    from minilooped.training import ConfigError
    from minilooped.training.dry_run import dry_run

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="the dry run is one process on the CPU"):
        dry_run(config_from_cli(["owt-gpt2-45m-lite", "--dry_run=true"]))
