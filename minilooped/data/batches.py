"""Random training batches from a token file, exactly as nanoGPT draws them.

A language model learns to predict token ``t+1`` from tokens ``0..t``. So one
training example is a window of ``block_size + 1`` consecutive tokens taken at a
random position of the corpus: the first ``block_size`` are the input ``x`` and the
same window shifted by one is the target ``y``::

    tokens:  ... 464  3290  318  257  3797  13 ...
    x:           464  3290  318  257
    y:                3290  318  257  3797

Every position of ``x`` is one prediction, so a (B, T) batch holds B*T examples.

The numbers come from a NumPy ``Generator``: the NumPy core and the PyTorch mirror
both call :func:`get_batch` with a generator from the same seed and therefore see
identical batches, which is what lets us compare their training runs step by step.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

_CHECK_CHUNK = 1 << 24  # ids scanned per step by check_token_ids: bounded memory on huge files


def _prepare_hint(path: Path) -> str:
    return (f"create it with `python -m minilooped.data shakespeare --tokenizer gpt2 --out {path.parent}` "
            f"(or `python -m minilooped.data openwebtext ... --out {path.parent}`)")


class TokenDataset:
    """A ``.bin`` token file opened read-only as ``np.memmap``: the OS pages in only what is read.

    ``dtype`` comes from the ``meta.json`` beside the file when there is one (written
    by :mod:`.prepare` and :mod:`.owt`), else from the ``dtype`` argument (default
    ``uint16``). Opening checks that the file exists, is not empty, holds a whole
    number of tokens and (with ``meta.json``) has the token count recorded there; with
    ``block_size`` it also checks the file is long enough for one training window.

    >>> train = TokenDataset("data/shakespeare/train.bin")        # doctest: +SKIP
    >>> x, y = train.get_batch(12, 64, np.random.default_rng(0))  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike, dtype=None, block_size: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"token file {self.path} does not exist; {_prepare_hint(self.path)}")
        self.meta = self._read_meta()
        meta_dtype = self.meta.get("dtype")
        if dtype is not None and meta_dtype is not None and np.dtype(dtype) != np.dtype(meta_dtype):
            raise ValueError(f"dtype={np.dtype(dtype).name} was requested for {self.path}, "
                             f"but its meta.json says the tokens are {meta_dtype}")
        self.dtype = np.dtype(dtype if dtype is not None else meta_dtype or np.uint16)
        size = self.path.stat().st_size
        if size == 0:
            raise ValueError(f"token file {self.path} is empty; prepare it again: {_prepare_hint(self.path)}")
        if size % self.dtype.itemsize:
            raise ValueError(
                f"token file {self.path} is corrupt: its {size} bytes are not a whole number of "
                f"{self.dtype.itemsize}-byte {self.dtype.name} tokens (truncated copy or wrong dtype?); "
                f"prepare it again"
            )
        expected = self.meta.get("counts", {}).get(self.path.stem)
        if expected is not None and expected != size // self.dtype.itemsize:
            raise ValueError(
                f"token file {self.path} is corrupt: meta.json records {expected} tokens but the file "
                f"holds {size // self.dtype.itemsize}; prepare it again"
            )
        self.tokens = np.memmap(self.path, dtype=self.dtype, mode="r")
        if block_size is not None:
            _check_length(len(self.tokens), block_size, str(self.path))

    def _read_meta(self) -> dict:
        meta_path = self.path.parent / "meta.json"
        if not meta_path.is_file():
            return {}
        try:
            return json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{meta_path} is not valid JSON ({e}); prepare the data again") from None

    @property
    def vocab_size(self) -> int | None:
        """Vocabulary size recorded in ``meta.json`` (None without one)."""
        return self.meta.get("vocab_size")

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index):
        return self.tokens[index]

    def get_batch(self, batch_size: int, block_size: int, rng: np.random.Generator):
        """Shorthand for ``get_batch(self, batch_size, block_size, rng)``."""
        return get_batch(self, batch_size, block_size, rng)

    def __repr__(self) -> str:
        return f"TokenDataset({str(self.path)!r}, tokens={len(self)}, dtype={self.dtype.name})"


def _check_length(n_tokens: int, block_size: int, name: str) -> None:
    # One window is block_size inputs plus one more token: the target of the last input.
    if n_tokens < block_size + 1:
        raise ValueError(
            f"{name} has {n_tokens} tokens, too few for block_size={block_size}: a training window "
            f"needs block_size + 1 = {block_size + 1} tokens. Use a smaller block_size or more text."
        )


def get_batch(data, batch_size: int, block_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``batch_size`` random windows: ``x, y`` int64 arrays of shape ``(batch_size, block_size)``.

    ``data`` is a :class:`TokenDataset` or any 1-D integer array. Window starts are
    uniform over ``0 .. len(data) - block_size - 1``, as nanoGPT's
    ``torch.randint(len(data) - block_size, (batch_size,))``, and ``y = x`` shifted by
    one token. The same ``rng`` state gives the same batch, in the NumPy core and in
    the PyTorch mirror alike.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator, e.g. np.random.default_rng(seed); got {type(rng).__name__}")
    for arg, value in (("batch_size", batch_size), ("block_size", block_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{arg} must be a positive integer, got {value!r}")
    name = str(data.path) if isinstance(data, TokenDataset) else "the token array"
    tokens = data.tokens if isinstance(data, TokenDataset) else np.asarray(data)
    if tokens.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one long stream of token ids), got shape {tokens.shape}")
    _check_length(len(tokens), block_size, name)
    ix = rng.integers(0, len(tokens) - block_size, size=batch_size)  # window starts, (B,)
    windows = tokens[ix[:, None] + np.arange(block_size + 1)]  # (B, T+1): one read per batch
    windows = windows.astype(np.int64)
    x = np.ascontiguousarray(windows[:, :-1])  # (B, T) inputs
    y = np.ascontiguousarray(windows[:, 1:])  # (B, T) targets: the next token at each position
    return x, y


def check_token_ids(ids, vocab_size: int, name: str = "token ids") -> None:
    """Raise ValueError if any id is negative or ``>= vocab_size``.

    An out-of-range id would index past the model's embedding table, an error that
    surfaces far from its cause; typically the data was tokenized with a bigger
    vocabulary than the model has. Large memmaps are scanned in chunks.
    """
    if isinstance(ids, TokenDataset):
        name, arr = (str(ids.path) if name == "token ids" else name), ids.tokens
    else:
        arr = np.asarray(ids)
    flat = arr.reshape(-1)
    for start in range(0, flat.size, _CHECK_CHUNK):
        chunk = flat[start:start + _CHECK_CHUNK]
        bad = np.flatnonzero((chunk < 0) | (chunk >= vocab_size))
        if bad.size:
            pos = start + int(bad[0])
            raise ValueError(
                f"{name}: id {int(flat[pos])} at position {pos} is outside the vocabulary "
                f"0..{vocab_size - 1} (vocab_size={vocab_size}); the data was tokenized with a "
                f"different tokenizer than the model expects. Re-prepare the data with the model's "
                f"tokenizer or give the model a vocab_size of at least {int(chunk.max()) + 1}."
            )
