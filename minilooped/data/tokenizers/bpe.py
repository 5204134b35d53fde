"""Byte-level byte-pair encoding (BPE), written from scratch.

BPE (Sennrich et al., 2016; byte-level as in GPT-2, Radford et al., 2019) builds a
vocabulary bottom-up:

1. Start from the 256 possible bytes: every text is a sequence of UTF-8 bytes, so
   every text can be encoded and nothing is ever "unknown".
2. Count every pair of neighbouring tokens (:func:`get_stats`).
3. Give the most frequent pair a new id and replace it everywhere (:func:`merge`).
4. Repeat until the vocabulary has the requested size.

The list of merges, in the order they were learned, *is* the tokenizer. To encode new
text we replay them: repeatedly apply the earliest-learned merge that occurs, until
none does. Because each merge's new id is larger than every earlier one, "earliest
learned" is simply "smallest new id".

Like GPT-2, text is first cut into chunks by a regex (words with their leading space,
numbers, punctuation runs, whitespace; see ``GPT2_SPLIT_PATTERN``) and merges never
cross chunk boundaries, so " dog." can never become one token and "dog" is learned once
instead of as "dog.", "dog!", "dog?".

:meth:`BPETokenizer.from_gpt2` loads OpenAI's 50,000 GPT-2 merges into this class;
it then encodes every text to exactly the ids tiktoken gives.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import regex

from ...atomic import atomic_write_json
from .gpt2_files import ENDOFTEXT, GPT2_SPLIT_PATTERN, bytes_to_unicode, gpt2_file_paths

FILE_FORMAT = "minilooped.bpe"
FILE_VERSION = 1
_CACHE_LIMIT = 200_000  # chunks remembered by encode(); cleared when full to bound memory


def get_stats(ids: Sequence[int]) -> dict[tuple[int, int], int]:
    """Count each pair of neighbouring ids.

    >>> get_stats([1, 2, 3, 1, 2])
    {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    """
    counts: dict[tuple[int, int], int] = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` by ``new_id``, left to right.

    Occurrences do not overlap: in ``[5, 5, 5]`` the pair ``(5, 5)`` is replaced once,
    leaving ``[new_id, 5]``.

    >>> merge([1, 2, 3, 1, 2], (1, 2), 4)
    [4, 3, 4]
    """
    out: list[int] = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class BPETokenizer:
    """A byte-level BPE tokenizer: ``train`` it, or load GPT-2's merges with ``from_gpt2``.

    State (everything else is derived from it):

    * ``merges``: ``{(id_a, id_b): new_id}`` in learning order; a smaller ``new_id``
      means an earlier merge, which has priority when encoding.
    * ``byte_ids``: the id of each byte value 0..255. ``list(range(256))`` for a
      tokenizer we train; GPT-2 numbered its bytes in another order (``!`` is id 0).
    * ``special_tokens``: ``{"<|endoftext|>": 50256}`` for GPT-2. Only ``decode``
      knows them: ``encode`` treats their text like any other text.
    * ``pattern``: the pre-tokenizer regex.

    >>> tok = BPETokenizer().train("low lower lowest " * 20, vocab_size=260)
    >>> tok.decode(tok.encode("lowest low"))
    'lowest low'
    """

    name = "bpe"

    def __init__(
        self,
        merges: dict[tuple[int, int], int] | None = None,
        byte_ids: Sequence[int] | None = None,
        special_tokens: dict[str, int] | None = None,
        pattern: str = GPT2_SPLIT_PATTERN,
    ):
        self.merges: dict[tuple[int, int], int] = dict(merges or {})
        self.byte_ids: list[int] = list(range(256)) if byte_ids is None else list(byte_ids)
        self.special_tokens: dict[str, int] = dict(special_tokens or {})
        self.pattern = pattern
        self._build()

    def _build(self) -> None:
        """Check the state and derive from it the id -> bytes table (``vocab``) and the regex."""
        if len(self.byte_ids) != 256 or len(set(self.byte_ids)) != 256:
            raise ValueError(
                f"byte_ids must give 256 distinct ids, one per byte value; got "
                f"{len(self.byte_ids)} ids ({len(set(self.byte_ids))} distinct)"
            )
        self.vocab: dict[int, bytes] = {i: bytes([b]) for b, i in enumerate(self.byte_ids)}
        for (a, b), new_id in sorted(self.merges.items(), key=lambda kv: kv[1]):
            # A merge can only use tokens that exist before it, and must create a new id.
            if a not in self.vocab or b not in self.vocab or new_id in self.vocab:
                raise ValueError(
                    f"invalid merge ({a}, {b}) -> {new_id}: both parts must be earlier "
                    f"tokens (ids below {new_id}) and {new_id} must be a new id"
                )
            self.vocab[new_id] = self.vocab[a] + self.vocab[b]
        for text, i in self.special_tokens.items():
            if i in self.vocab:
                raise ValueError(f"special token {text!r} reuses id {i} of an ordinary token")
        self._special_bytes = {i: text.encode("utf-8") for text, i in self.special_tokens.items()}
        self._n_vocab = max([*self.vocab, *self._special_bytes]) + 1
        self._regex = regex.compile(self.pattern)
        self._cache: dict[str, list[int]] = {}

    # ------------------------------------------------------------------ sizes
    @property
    def n_vocab(self) -> int:
        """Number of ids: one more than the largest id (ordinary or special)."""
        return self._n_vocab

    @property
    def eot_token(self) -> int | None:
        """The ``<|endoftext|>`` id if this tokenizer has one (GPT-2: 50256), else None."""
        return self.special_tokens.get(ENDOFTEXT)

    # --------------------------------------------------------------- training
    def train(self, text: str, vocab_size: int, verbose: bool = False) -> "BPETokenizer":
        """Learn ``vocab_size - 256`` merges from ``text``; returns ``self``.

        Two speed-ups keep this pure-Python loop practical on a few MB of text, without
        changing the result:

        * pre-tokenizing first means each *distinct* chunk is stored once, with its
          count: " the" appearing 20,000 times is one list with weight 20,000;
        * the pair counts are computed once, then only corrected for the chunks a merge
          actually changed (recounting every chunk at every step gives the same counts,
          just slower).

        Ties between equally frequent pairs go to the smallest pair ``(a, b)``, so the
        merges are fully determined by the text. Training stops early when no pair is
        left (every chunk is one token); then ``n_vocab`` is smaller than ``vocab_size``.
        """
        if vocab_size < 256:
            raise ValueError(f"vocab_size must be at least 256 (one id per byte), got {vocab_size}")
        self.merges, self.byte_ids, self.special_tokens = {}, list(range(256)), {}
        chunk_counts = Counter(self._regex.findall(text))
        words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
        weights = list(chunk_counts.values())
        vocab = {i: bytes([i]) for i in range(256)}  # only for the verbose printout
        stats: dict[tuple[int, int], int] = {}  # pair -> occurrences in the whole text
        for word, weight in zip(words, weights):
            for pair, count in get_stats(word).items():
                stats[pair] = stats.get(pair, 0) + count * weight
        for new_id in range(256, vocab_size):
            if not stats:
                break  # every chunk is one token already: nothing left to merge
            pair = max(stats, key=lambda p: (stats[p], -p[0], -p[1]))  # most frequent; ties: smallest pair
            occurrences = stats[pair]
            for k, word in enumerate(words):
                if pair[0] not in word or pair[1] not in word:
                    continue  # cheap test first: most chunks do not contain the pair
                merged = merge(word, pair, new_id)
                if len(merged) == len(word):
                    continue
                for p, count in get_stats(word).items():  # take the old chunk's pairs out...
                    stats[p] -= count * weights[k]
                    if stats[p] == 0:
                        del stats[p]
                for p, count in get_stats(merged).items():  # ...and put the new chunk's in
                    stats[p] = stats.get(p, 0) + count * weights[k]
                words[k] = merged
            self.merges[pair] = new_id
            if verbose:
                vocab[new_id] = vocab[pair[0]] + vocab[pair[1]]
                print(f"merge {new_id - 255}/{vocab_size - 256}: {vocab[pair[0]]!r} + {vocab[pair[1]]!r} "
                      f"-> {vocab[new_id]!r} = id {new_id} ({occurrences} occurrences)")
        self._build()
        return self

    # ------------------------------------------------------- encode / decode
    def _encode_chunk(self, chunk: bytes) -> list[int]:
        """BPE inside one pre-token chunk: apply the earliest-learned merge until none applies."""
        ids = [self.byte_ids[b] for b in chunk]
        while len(ids) >= 2:
            stats = get_stats(ids)
            # The pair whose merge was learned first (smallest new id); unknown pairs rank last.
            pair = min(stats, key=lambda p: self.merges.get(p, float("inf")))
            if pair not in self.merges:
                break
            ids = merge(ids, pair, self.merges[pair])
        return ids

    def encode(self, text: str) -> list[int]:
        """Text -> ids. Special tokens such as ``<|endoftext|>`` are encoded as plain text.

        Natural text repeats its words, so each distinct chunk is encoded once and
        remembered; this makes encoding a whole corpus fast enough in pure Python.
        """
        ids: list[int] = []
        for chunk in self._regex.findall(text):
            chunk_ids = self._cache.get(chunk)
            if chunk_ids is None:
                chunk_ids = self._encode_chunk(chunk.encode("utf-8"))
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
                self._cache[chunk] = chunk_ids
            ids.extend(chunk_ids)
        return ids

    # Same name as tiktoken's method, so code can use either tokenizer.
    encode_ordinary = encode

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Ids -> the raw bytes they stand for (may end inside a UTF-8 character)."""
        parts = []
        for i in ids:
            i = int(i)
            piece = self.vocab.get(i)
            if piece is None:
                piece = self._special_bytes.get(i)
            if piece is None:
                raise ValueError(
                    f"token id {i} is not in this BPE tokenizer's vocabulary "
                    f"(n_vocab={self.n_vocab}); were these ids made by another tokenizer?"
                )
            parts.append(piece)
        return b"".join(parts)

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text. Bytes that are not valid UTF-8 (e.g. half a character) become U+FFFD, as in tiktoken."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # ---------------------------------------------------------- save / load
    def to_dict(self) -> dict:
        """The tokenizer as plain JSON-able data."""
        return {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "pattern": self.pattern,
            "byte_ids": self.byte_ids,
            "merges": [[a, b, new_id] for (a, b), new_id in self.merges.items()],
            "special_tokens": self.special_tokens,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer to a JSON file (atomically: no half-written file on a crash)."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BPETokenizer":
        """Read a tokenizer written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"BPE tokenizer file {path} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not a valid BPE tokenizer file (not JSON: {e})") from None
        if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
            raise ValueError(f"{path} is not a {FILE_FORMAT} file (its 'format' field is missing or wrong)")
        if data.get("version") != FILE_VERSION:
            raise ValueError(f"{path} has BPE file version {data.get('version')}; this code reads version {FILE_VERSION}")
        return cls(
            merges={(a, b): new_id for a, b, new_id in data["merges"]},
            byte_ids=data["byte_ids"],
            special_tokens=data["special_tokens"],
            pattern=data["pattern"],
        )

    @classmethod
    def from_gpt2(cls) -> "BPETokenizer":
        """GPT-2's tokenizer in this from-scratch class, read from OpenAI's two files.

        ``vocab.bpe`` lists the merges as pairs of token strings in learning order and
        ``encoder.json`` gives each token string its id; both are written in GPT-2's
        printable-byte alphabet (:func:`~.gpt2_files.bytes_to_unicode`). GPT-2 gave
        merge number ``k`` the id ``256 + k``, so "smallest new id first" is exactly
        GPT-2's merge priority and ``encode`` reproduces tiktoken's ids.
        """
        vocab_bpe, encoder_json = gpt2_file_paths()
        encoder: dict[str, int] = json.loads(encoder_json.read_text(encoding="utf-8"))
        printable = bytes_to_unicode()
        byte_ids = [encoder[printable[b]] for b in range(256)]
        merges: dict[tuple[int, int], int] = {}
        lines = vocab_bpe.read_text(encoding="utf-8").split("\n")
        for line in lines[1:]:  # line 0 is the header "#version: 0.2"
            if not line:
                continue
            first, second = line.split(" ")
            merges[(encoder[first], encoder[second])] = encoder[first + second]
        return cls(merges=merges, byte_ids=byte_ids,
                   special_tokens={ENDOFTEXT: encoder[ENDOFTEXT]}, pattern=GPT2_SPLIT_PATTERN)

    def __repr__(self) -> str:
        return f"BPETokenizer(n_vocab={self.n_vocab}, merges={len(self.merges)})"
