"""Turn a text into token files: ``train.bin``, ``val.bin`` and ``meta.json``.

A ``.bin`` file is nothing but the token ids, one after the other, as raw unsigned
integers (no header), exactly as nanoGPT stores them. Training then reads random
windows straight from disk through ``np.memmap`` (:mod:`.batches`), so even a corpus
far larger than memory costs no RAM.

The integer width is the smallest that holds every id: ``uint16`` (2 bytes) when the
vocabulary has at most 65,536 ids, which covers GPT-2's 50,257, else ``uint32``.
Since the file has no header, ``meta.json`` beside it records what is needed to read
it back::

    {"tokenizer": "gpt2", "vocab_size": 50257, "dtype": "uint16",
     "counts": {"train": ..., "val": ...}, "sha256": {"train": ..., "val": ...},
     "source": "...", "tokenizer_file": null}

Tokenizers with a vocabulary learned from the corpus (``char``, ``bpe``) are saved
as ``tokenizer.json`` beside the bins, so the ids can be decoded later
(:func:`load_prepared_tokenizer`).

Every file is written atomically (``.tmp`` + rename), ``meta.json`` last: a folder
with a ``meta.json`` is a finished folder.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import atomic_path, atomic_write_json
from .corpora import load_text, shakespeare_source, shakespeare_split, split_text
from .tokenizers import get_tokenizer

META_NAME = "meta.json"
TOKENIZER_FILE = "tokenizer.json"
SPLITS = ("train", "val")


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned integer type that holds every id ``0 .. vocab_size - 1``."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if vocab_size <= 2**16:  # ids up to 65535 fit in 16 bits
        return np.dtype(np.uint16)
    if vocab_size <= 2**32:
        return np.dtype(np.uint32)
    raise ValueError(f"vocab_size {vocab_size} does not fit in 32-bit token ids")


def write_tokens(path: str | os.PathLike, ids: Sequence[int] | np.ndarray, vocab_size: int) -> dict:
    """Write ``ids`` to a headerless ``.bin`` file atomically.

    Returns ``{"tokens": count, "sha256": hex digest of the file, "dtype": name}``.
    Refuses ids outside ``0 .. vocab_size - 1`` (they would silently wrap around in
    a narrow integer type).
    """
    dtype = token_dtype(vocab_size)
    arr = np.asarray(ids, dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError(f"token ids must be a 1-D sequence, got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
        raise ValueError(
            f"token ids must lie in 0..{vocab_size - 1} for vocab_size={vocab_size}, "
            f"got min {arr.min()} and max {arr.max()}"
        )
    data = arr.astype(dtype).tobytes()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return {"tokens": int(arr.size), "sha256": hashlib.sha256(data).hexdigest(), "dtype": dtype.name}


def read_meta(data_dir: str | os.PathLike) -> dict:
    """The ``meta.json`` of a prepared folder, with a clear error if there is none."""
    path = Path(data_dir) / META_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: {Path(data_dir)} is not a prepared data folder (or its "
            f"preparation did not finish). Create it with e.g. "
            f"`python -m minilooped.data shakespeare --tokenizer gpt2 --out {Path(data_dir)}`"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete the folder and prepare it again") from None


def prepare_text(
    train_text: str,
    val_text: str,
    out_dir: str | os.PathLike,
    tokenizer: str = "gpt2",
    *,
    source: str = "",
    bpe_vocab_size: int = 1024,
) -> dict:
    """Tokenize a train and a val text and write ``out_dir/{train,val}.bin`` + ``meta.json``.

    ``tokenizer`` is ``"gpt2"``, ``"char"`` (vocabulary = characters of train + val,
    like nanoGPT's shakespeare_char, so no val character is unknown) or ``"bpe"``
    (trained on the train text only, with ``bpe_vocab_size`` ids; slow in pure Python
    for large texts). Returns the metadata written to ``meta.json``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path = out_dir / META_NAME
    if meta_path.exists():
        meta_path.unlink()  # the folder is about to change: it is unfinished until meta.json is back

    tokenizer_file = None
    if tokenizer == "gpt2":
        tok = get_tokenizer("gpt2")
    elif tokenizer == "char":
        tok = get_tokenizer("char", text=train_text + val_text)
    elif tokenizer == "bpe":
        tok = get_tokenizer("bpe", text=train_text, vocab_size=bpe_vocab_size)
    else:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; choose gpt2, char or bpe")
    if tokenizer != "gpt2":
        tokenizer_file = TOKENIZER_FILE
        tok.save(out_dir / tokenizer_file)

    counts, digests = {}, {}
    for split, text in zip(SPLITS, (train_text, val_text)):
        # encode_ordinary: a literal "<|endoftext|>" inside the text stays plain text.
        info = write_tokens(out_dir / f"{split}.bin", tok.encode_ordinary(text), tok.n_vocab)
        counts[split], digests[split] = info["tokens"], info["sha256"]

    meta = {
        "tokenizer": tokenizer,
        "vocab_size": int(tok.n_vocab),
        "dtype": token_dtype(tok.n_vocab).name,
        "eot_token": tok.eot_token,
        "counts": counts,
        "characters": {"train": len(train_text), "val": len(val_text)},
        "sha256": digests,
        "source": source,
        "tokenizer_file": tokenizer_file,
    }
    atomic_write_json(meta_path, meta)
    return meta


def prepare_shakespeare(
    out_dir: str | os.PathLike,
    tokenizer: str = "gpt2",
    *,
    val_fraction: float = 0.1,
    bpe_vocab_size: int = 1024,
) -> dict:
    """Shakespeare's plays -> token files in ``out_dir`` (the last ``val_fraction`` is val)."""
    train_text, val_text = shakespeare_split(val_fraction)
    return prepare_text(train_text, val_text, out_dir, tokenizer,
                        source=shakespeare_source(), bpe_vocab_size=bpe_vocab_size)


def prepare_local_text(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    tokenizer: str = "gpt2",
    *,
    val_fraction: float = 0.1,
    bpe_vocab_size: int = 1024,
) -> dict:
    """Your own text file or folder (:func:`~.corpora.load_text`) -> token files in ``out_dir``."""
    text = load_text(path)
    train_text, val_text = split_text(text, val_fraction)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return prepare_text(train_text, val_text, out_dir, tokenizer,
                        source=f"local text {Path(path).resolve()}, text sha256 {digest}",
                        bpe_vocab_size=bpe_vocab_size)


def load_prepared_tokenizer(data_dir: str | os.PathLike):
    """The tokenizer a prepared folder was made with (to decode its ids or encode prompts)."""
    data_dir = Path(data_dir)
    meta = read_meta(data_dir)
    if meta["tokenizer"] == "gpt2":
        return get_tokenizer("gpt2")
    if not meta.get("tokenizer_file"):
        raise ValueError(f"{data_dir / META_NAME} names tokenizer {meta['tokenizer']!r} but no tokenizer_file")
    return get_tokenizer(meta["tokenizer"], path=data_dir / meta["tokenizer_file"])


__all__ = [
    "load_prepared_tokenizer", "prepare_local_text", "prepare_shakespeare", "prepare_text",
    "read_meta", "token_dtype", "write_tokens",
]
