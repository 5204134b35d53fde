"""OpenWebText -> GPT-2 token files, the way nanoGPT prepares it (but resumable).

OpenWebText (Gokaslan & Cohen, 2019) is the open re-creation of the WebText corpus GPT-2
was trained on: ~8.0M web documents, ~9.0B GPT-2 tokens. nanoGPT's recipe, which we
follow so that losses are comparable with its published numbers:

1. load the documents (one ``text`` column) with Hugging Face ``datasets``;
2. hold out a validation split: ``train_test_split(test_size=0.0005, seed=2357,
   shuffle=True)``, with ``test`` renamed ``val`` (~4,000 documents);
3. tokenize every document with GPT-2's tokenizer in parallel (``num_proc``
   processes), appending ``<|endoftext|>`` (50256) after each one so the model sees
   where one document ends and the next begins;
4. concatenate each split's ids into one ``uint16`` memmap, ``train.bin``
   (~17 GB) and ``val.bin`` (~8.5 MB), written shard by shard.

Loading scripts stopped working in ``datasets`` 4, so we read the dataset's PARQUET
files. By default they are the Hub's automatic Parquet conversion of
"Skylion007/openwebtext" (branch ``refs/convert/parquet``), read through ``hf://``
paths; that needs a networked machine, the Hub's ``huggingface_hub`` client, and about
55 GB of disk for the Hugging Face cache. Check the file list on the Hub first: if the
conversion there is partial (a ``partial-train`` folder), download the complete
parquet files another way and pass them with ``data_files``. Nothing here is used by
the tests or the book, which run offline.

The real run, by nanoGPT's prepare.py counts (not re-measured here): 8,013,769
documents; ``train.bin`` 9,035,582,198 tokens (~17 GB), ``val.bin`` 4,434,897 tokens
(~8.5 MB); ~54 GB of Hugging Face cache for the dataset. Time is dominated by
tokenizing ~9B tokens and writing them through ``datasets``: tens of minutes to an
hour with 8 processes on a recent server (an estimate, not a measurement here), plus
the download of the parquet files. The commands::

    python -m minilooped.data openwebtext --out data/openwebtext --num-proc 8
    python -m minilooped.data openwebtext --data-files owt_parquet/ --out data/openwebtext

A tiny stand-in with the same layout, :func:`write_sample_parquet` (a ``text``
column, one document a row, cut from the Shakespeare the package ships), lets the
tests and the dry run (``--dry_run=true``, minilooped/training/dry_run.py) run this
whole preparation offline, nanoGPT's split and seed included.

Resuming: each split is written to ``<split>.bin.tmp`` and renamed when complete,
then recorded in ``meta.json``. A rerun skips every split whose ``.bin`` and
``meta.json`` entry agree and redoes the rest (a leftover ``.tmp`` is overwritten).
``datasets`` also caches the tokenized dataset, so a rerun after a crash in step 4
does not tokenize again.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from ..atomic import atomic_path, atomic_write_json
from .tokenizers.gpt2 import get_gpt2_tokenizer
from .tokenizers.gpt2_files import EOT_TOKEN, N_VOCAB

DEFAULT_DATA_FILES = "hf://datasets/Skylion007/openwebtext@refs/convert/parquet/plain_text/train/*.parquet"
TEST_SIZE = 0.0005  # nanoGPT's val fraction: ~4,000 of ~8M documents
SEED = 2357  # nanoGPT's split seed: same documents in val as nanoGPT
SPLITS = ("train", "val")
DTYPE = np.uint16  # GPT-2's 50,257 ids fit in 16 bits
META_NAME = "meta.json"


def _tokenize_document(example: dict) -> dict:
    # Module-level (not a closure) so datasets can send it to worker processes; each
    # worker builds the cached GPT-2 tokenizer once.
    enc = get_gpt2_tokenizer()
    ids = enc.encode_ordinary(example["text"])  # a literal "<|endoftext|>" in a web page stays text
    ids.append(EOT_TOKEN)  # document boundary
    return {"ids": ids, "len": len(ids)}


def write_sample_parquet(path: str | os.PathLike, n_docs: int = 24, doc_chars: int = 6000) -> Path:
    """A small parquet file in OpenWebText's layout: one ``text`` column, one document a row.

    The documents are consecutive ``doc_chars``-character stretches of the Shakespeare
    text shipped with the package (no download), ~1,500 GPT-2 tokens each: with
    nanoGPT's test_size (0.0005) one document goes to val, and it is longer than a
    1024-token training window."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .corpora import shakespeare_text

    text = shakespeare_text()
    docs = [text[i * doc_chars:(i + 1) * doc_chars] for i in range(n_docs)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(pa.table({"text": docs}), tmp)
    return path


def resolve_data_files(data_files: str | os.PathLike | Sequence[str | os.PathLike]) -> str | list[str]:
    """Turn a folder into its sorted ``*.parquet`` files; check local files exist; pass ``hf://`` through."""
    if isinstance(data_files, (str, os.PathLike)):
        text = os.fspath(data_files)
        if "://" in text:
            return text
        path = Path(text)
        if path.is_dir():
            files = sorted(str(p) for p in path.rglob("*.parquet"))
            if not files:
                raise FileNotFoundError(f"folder {path} contains no .parquet files")
            return files
        if any(ch in text for ch in "*?["):
            return text  # a glob: datasets expands it (and says so if nothing matches)
        if not path.is_file():
            raise FileNotFoundError(f"parquet file {path} does not exist")
        return [text]
    files = [os.fspath(f) for f in data_files]
    if not files:
        raise ValueError("data_files is empty: give parquet files, a folder or an hf:// pattern")
    for f in files:
        if "://" not in f and not any(ch in f for ch in "*?[") and not Path(f).is_file():
            raise FileNotFoundError(f"parquet file {f} does not exist")
    return files


def _read_meta(out_dir: Path) -> dict:
    path = out_dir / META_NAME
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it to prepare every split again") from None


def _split_finished(out_dir: Path, meta: dict, split: str) -> bool:
    """A split is finished when its .bin exists and has the size meta.json records."""
    tokens = meta.get("counts", {}).get(split)
    path = out_dir / f"{split}.bin"
    return tokens is not None and path.is_file() and path.stat().st_size == tokens * np.dtype(DTYPE).itemsize


def write_split(dset, path: Path, num_shards: int = 1024) -> tuple[int, str]:
    """Concatenate the ``ids`` of a tokenized split into a uint16 file, shard by shard.

    The whole split never sits in memory: we size a memmap from the ``len`` column,
    then copy ``num_shards`` contiguous slices of documents into it. Returns
    ``(tokens, sha256)``; the hash is computed on the fly as the shards go by in order.
    """
    n_tokens = int(np.asarray(dset.with_format("numpy")["len"], dtype=np.uint64).sum())
    num_shards = max(1, min(num_shards, len(dset)))  # a shard per document at most
    digest = hashlib.sha256()
    idx = 0
    with atomic_path(path) as tmp:
        arr = np.memmap(tmp, dtype=DTYPE, mode="w+", shape=(n_tokens,))
        for i in tqdm(range(num_shards), desc=f"writing {path.name}"):
            shard = dset.shard(num_shards=num_shards, index=i, contiguous=True).with_format("numpy")
            if len(shard) == 0:
                continue
            chunk = np.concatenate(list(shard["ids"])).astype(DTYPE)
            arr[idx:idx + len(chunk)] = chunk
            digest.update(chunk.tobytes())
            idx += len(chunk)
        arr.flush()
        del arr  # close the memmap before the rename
        if idx != n_tokens:
            raise RuntimeError(f"wrote {idx} tokens to {path} but the len column adds up to {n_tokens}")
    return n_tokens, digest.hexdigest()


def prepare_openwebtext(
    data_files: str | os.PathLike | Sequence[str | os.PathLike] = DEFAULT_DATA_FILES,
    out_dir: str | os.PathLike = "data/openwebtext",
    num_proc: int = 8,
    *,
    test_size: float = TEST_SIZE,
    seed: int = SEED,
    num_shards: int = 1024,
    cache_dir: str | os.PathLike | None = None,
) -> dict:
    """Tokenize OpenWebText parquet files into ``out_dir/{train,val}.bin`` + ``meta.json``.

    ``data_files``: parquet file(s), a folder of them, or an ``hf://`` pattern (the
    default, see the module docstring). ``num_proc``: tokenizer processes. ``cache_dir``:
    where ``datasets`` keeps its Arrow copies (default: the Hugging Face cache).
    Splits already finished in ``out_dir`` are skipped. Prints, and returns in the
    metadata, the documents and tokens of each split.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = _read_meta(out_dir)
    settings = {"test_size": test_size, "seed": seed}
    if meta and any(meta.get(k) != v for k, v in settings.items()):
        raise ValueError(
            f"{out_dir} holds splits made with test_size={meta.get('test_size')}, seed={meta.get('seed')}, "
            f"not test_size={test_size}, seed={seed}; use another --out or delete that folder"
        )
    todo = [s for s in SPLITS if not _split_finished(out_dir, meta, s)]
    for split in SPLITS:
        if split not in todo:
            print(f"{split}: already prepared in {out_dir / (split + '.bin')}, skipping")

    if todo:
        from datasets import load_dataset  # imported here: only this function needs it

        files = resolve_data_files(data_files)
        dataset = load_dataset("parquet", data_files=files, split="train",
                               cache_dir=None if cache_dir is None else str(cache_dir),
                               num_proc=num_proc if num_proc > 1 else None)
        if "text" not in dataset.column_names:
            raise ValueError(f"the parquet files have columns {dataset.column_names}; a 'text' column is needed")
        split_dataset = dataset.train_test_split(test_size=test_size, seed=seed, shuffle=True)
        split_dataset["val"] = split_dataset.pop("test")

        meta = {
            "tokenizer": "gpt2", "vocab_size": N_VOCAB, "dtype": np.dtype(DTYPE).name,
            "eot_token": EOT_TOKEN, **settings, "source": files,
            "counts": {}, "documents": {}, "sha256": {}, "tokenizer_file": None,
            **{k: meta[k] for k in ("counts", "documents", "sha256") if k in meta},
        }
        for split in todo:
            dset = split_dataset[split]
            tokenized = dset.map(_tokenize_document, remove_columns=dset.column_names,
                                 desc=f"tokenizing {split}", num_proc=num_proc if num_proc > 1 else None)
            tokens, sha = write_split(tokenized, out_dir / f"{split}.bin", num_shards)
            meta["counts"][split] = tokens
            meta["documents"][split] = len(tokenized)
            meta["sha256"][split] = sha
            atomic_write_json(out_dir / META_NAME, meta)  # this split is now "finished"

    for split in SPLITS:
        print(f"{split}: {meta['documents'][split]:,} documents, {meta['counts'][split]:,} tokens "
              f"({meta['counts'][split] * np.dtype(DTYPE).itemsize / 1e6:,.1f} MB)")
    return meta
