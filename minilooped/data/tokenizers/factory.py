"""One entry point for all tokenizers: ``get_tokenizer("gpt2" | "char" | "bpe", ...)``.

All three share the small interface the rest of minilooped relies on:
``encode(text) -> list[int]``, ``encode_ordinary(text)``, ``decode(ids) -> str``,
``n_vocab`` and ``eot_token`` (an id, or None when there is none).
"""
from __future__ import annotations

import os

from .bpe import BPETokenizer
from .char import CharTokenizer
from .gpt2 import get_gpt2_tokenizer

TOKENIZER_NAMES = ("gpt2", "char", "bpe")


def get_tokenizer(
    name: str,
    *,
    text: str | None = None,
    path: str | os.PathLike | None = None,
    vocab_size: int | None = None,
):
    """Build or load a tokenizer by name.

    * ``"gpt2"``: GPT-2's exact BPE through tiktoken (no other argument).
    * ``"char"``: ``path`` to a saved :class:`CharTokenizer`, or the ``text`` to take
      its characters from.
    * ``"bpe"``: ``path`` to a saved :class:`BPETokenizer`, or a ``text`` and a
      ``vocab_size`` to train one on.
    """
    if name == "gpt2":
        if text is not None or path is not None or vocab_size is not None:
            raise ValueError("get_tokenizer('gpt2') takes no text, path or vocab_size: GPT-2's vocabulary is fixed")
        return get_gpt2_tokenizer()
    if name == "char":
        if path is not None:
            return CharTokenizer.load(path)
        if text is None:
            raise ValueError("get_tokenizer('char') needs path= (a saved tokenizer) or text= (to build one from)")
        return CharTokenizer(text)
    if name == "bpe":
        if path is not None:
            return BPETokenizer.load(path)
        if text is None or vocab_size is None:
            raise ValueError("get_tokenizer('bpe') needs path= (a saved tokenizer) or both text= and vocab_size= (to train one)")
        return BPETokenizer().train(text, vocab_size)
    raise ValueError(f"unknown tokenizer {name!r}; choose one of {', '.join(TOKENIZER_NAMES)}")
