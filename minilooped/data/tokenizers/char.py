"""The simplest tokenizer: one id per character.

The vocabulary is the sorted set of characters of a text, so ids follow Unicode
order (``"\\n"`` < ``" "`` < ``"!"`` < ... < ``"A"`` < ... < ``"a"``). It is the
tokenizer of nanoGPT's ``shakespeare_char``: a tiny vocabulary (tens of ids) and long
sequences, the opposite trade-off from GPT-2's 50,257 BPE tokens.

>>> tok = CharTokenizer("hello")
>>> tok.chars
['e', 'h', 'l', 'o']
>>> tok.encode("hole")
[1, 3, 2, 0]
>>> tok.decode([1, 0, 2, 2, 3])
'hello'
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from ...atomic import atomic_write_json

FILE_FORMAT = "minilooped.char"
FILE_VERSION = 1


class CharTokenizer:
    """Character-level tokenizer whose vocabulary is the distinct characters of ``text``."""

    name = "char"
    eot_token = None  # no end-of-text token: a corpus here is one continuous text

    def __init__(self, text: str):
        if not isinstance(text, str):
            raise TypeError(f"CharTokenizer needs a str to take its characters from, got {type(text).__name__}")
        if not text:
            raise ValueError("CharTokenizer needs a non-empty text to build its vocabulary from")
        self.chars: list[str] = sorted(set(text))
        self.stoi: dict[str, int] = {ch: i for i, ch in enumerate(self.chars)}  # string -> id
        self.itos: dict[int, str] = dict(enumerate(self.chars))  # id -> string

    @property
    def n_vocab(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        """Text -> ids; raises ValueError naming the first character not in the vocabulary."""
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError as e:
            ch = e.args[0]
            raise ValueError(
                f"character {ch!r} (U+{ord(ch):04X}) at position {text.index(ch)} is not in this "
                f"character tokenizer's vocabulary of {self.n_vocab} characters; build the "
                f"tokenizer from a text that contains it"
            ) from None

    # Same name as tiktoken's method, so code can use either tokenizer.
    encode_ordinary = encode

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text; raises ValueError for an id outside ``0..n_vocab-1``."""
        try:
            return "".join(self.itos[int(i)] for i in ids)
        except KeyError as e:
            raise ValueError(
                f"token id {e.args[0]} is not in this character tokenizer's vocabulary "
                f"(ids 0..{self.n_vocab - 1})"
            ) from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary to a small JSON file (atomically)."""
        atomic_write_json(path, {"format": FILE_FORMAT, "version": FILE_VERSION, "chars": "".join(self.chars)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CharTokenizer":
        """Read a tokenizer written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"character tokenizer file {path} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not a valid character tokenizer file (not JSON: {e})") from None
        if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
            raise ValueError(f"{path} is not a {FILE_FORMAT} file (its 'format' field is missing or wrong)")
        if data.get("version") != FILE_VERSION:
            raise ValueError(f"{path} has char file version {data.get('version')}; this code reads version {FILE_VERSION}")
        return cls(data["chars"])

    def __repr__(self) -> str:
        return f"CharTokenizer(n_vocab={self.n_vocab})"
