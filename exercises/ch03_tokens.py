"""Chapter 3 exercises: tokens and data.

    python -m minilooped.grade 3      # grade them all: a score table
    pytest -m ex3_2                   # one exercise, with the full failure report

Plain Python and NumPy: no tensors here. Each exercise is graded on its own; the library
stands in for the other ones (exercise 3.3's tokenizer is trained with the library's
get_stats and merge, not yours).
"""
from minilooped.data.tokenizers.bpe import BPETokenizer as _LibraryBPETokenizer
from minilooped.data.tokenizers.char import CharTokenizer as _LibraryCharTokenizer


def get_stats(ids):
    """Exercise 3.1 -- count the pairs of neighbouring ids.

    Input: ``ids``, a list of ints. Return a dict mapping each pair ``(ids[i], ids[i+1])``
    that occurs to its number of occurrences (overlapping ones count: [7, 7, 7] has the
    pair (7, 7) twice). An empty dict for fewer than two ids.

    >>> get_stats([1, 2, 3, 1, 2])
    {(1, 2): 2, (2, 3): 1, (3, 1): 1}

    Library: ``minilooped.data.tokenizers.bpe.get_stats``.
    """
    raise NotImplementedError("ex3_1: get_stats")


def merge(ids, pair, new_id):
    """Exercise 3.2 -- one BPE merge step: replace every occurrence of ``pair`` by ``new_id``.

    Inputs: ``ids``, a list of ints; ``pair``, a tuple (a, b); ``new_id``, an int.
    Return a new list (leave ``ids`` unchanged) in which, scanning left to right, each
    place where ``a`` is immediately followed by ``b`` becomes the single id ``new_id``.
    Occurrences do not overlap: once (a, b) is replaced, the scan continues after b,
    so merge([5, 5, 5], (5, 5), 9) == [9, 5].

    >>> merge([1, 2, 3, 1, 2], (1, 2), 4)
    [4, 3, 4]

    Library: ``minilooped.data.tokenizers.bpe.merge``.
    """
    raise NotImplementedError("ex3_2: merge")


class BPETokenizer(_LibraryBPETokenizer):
    """Exercise 3.3 -- encoding with learned merges (the rest of the class is the library's).

    The tokenizer's state: ``self.merges``, a dict {(id_a, id_b): new_id} (a smaller
    new_id was learned earlier), and ``self.byte_ids``, the id of each byte value 0..255
    (``list(range(256))`` for a tokenizer you train; GPT-2 numbers its bytes differently).
    ``encode(text)`` cuts the text into chunks with a regex and calls ``_encode_chunk``
    on each chunk's UTF-8 bytes.
    """

    def _encode_chunk(self, chunk):
        """Encode one chunk: ``chunk`` is a ``bytes`` object; return a list of ids.

        1. Start from the bytes' ids: ``[self.byte_ids[b] for b in chunk]``.
        2. While at least two ids remain: among the neighbouring pairs that are in
           ``self.merges``, take the one learned first (the smallest new id), and
           replace all its occurrences by its new id (``merge``). Stop when no pair is
           a known merge.

        Applying merges in learning order, not left to right, is what reproduces the
        training: with merges {(b, c): 256, (a, b): 257}, "abc" encodes to [a, 256].
        You may use the library's ``get_stats`` and ``merge``
        (``from minilooped.data.tokenizers.bpe import get_stats, merge``).
        Library: ``minilooped.data.tokenizers.bpe.BPETokenizer._encode_chunk``.
        """
        raise NotImplementedError("ex3_3: BPETokenizer._encode_chunk")


class CharTokenizer(_LibraryCharTokenizer):
    """Exercise 3.4 -- a character-level tokenizer (save, load and n_vocab are the library's)."""

    def __init__(self, text):
        """Build the vocabulary from ``text`` (a non-empty str). Set three attributes:

        ``self.chars``: the sorted list of the distinct characters of ``text``;
        ``self.stoi``: a dict character -> id, the character's position in ``chars``;
        ``self.itos``: the reverse dict, id -> character.

        >>> CharTokenizer("hello").chars
        ['e', 'h', 'l', 'o']
        """
        raise NotImplementedError("ex3_4: CharTokenizer.__init__")

    def encode(self, text):
        """Text -> list of ids. A character that is not in the vocabulary raises
        ``ValueError`` with a message that names it."""
        raise NotImplementedError("ex3_4: CharTokenizer.encode")

    def decode(self, ids):
        """Iterable of ids (ints or NumPy integers) -> text. An id outside
        0 .. n_vocab - 1 raises ``ValueError``."""
        raise NotImplementedError("ex3_4: CharTokenizer.decode")


def get_batch(data, batch_size, block_size, rng):
    """Exercise 3.5 -- a batch of random training windows, as nanoGPT draws them.

    Inputs: ``data``, a 1-D integer array of token ids (often an ``np.memmap`` of a
    .bin file, which reads from disk only the windows you index) or a
    ``minilooped.data.TokenDataset`` (its ids are ``data.tokens``); ``batch_size`` B and
    ``block_size`` T, positive ints; ``rng``, a ``np.random.Generator``.
    Return ``(x, y)``, two int64 arrays of shape (B, T):

        starts = rng.integers(0, len(data) - T, size=B)     exactly this call, once
        x[b] = data[starts[b] : starts[b] + T]
        y[b] = data[starts[b] + 1 : starts[b] + T + 1]     the next token of each position

    (The same call makes the NumPy core and the PyTorch mirror train on identical
    batches.) If ``data`` has fewer than T + 1 tokens raise ``ValueError`` saying so.
    Library: ``minilooped.data.get_batch``.
    """
    raise NotImplementedError("ex3_5: get_batch")
