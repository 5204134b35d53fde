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

    Input: ``ids``, a list of ints. Output: a dict mapping each pair of neighbouring ids
    (a tuple ``(a, b)``: ``a`` immediately followed by ``b``) that occurs to the number of
    positions where it occurs. Pairs may overlap, and every position counts. BPE training
    takes the most frequent pair of this dict as its next merge.

    >>> get_stats([1, 2, 3, 1, 2])
    {(1, 2): 2, (2, 3): 1, (3, 1): 1}

    Library: ``minilooped.data.tokenizers.bpe.get_stats``.
    """
    raise NotImplementedError("ex3_1: get_stats")


def merge(ids, pair, new_id):
    """Exercise 3.2 -- one BPE merge step: replace every occurrence of ``pair`` by ``new_id``.

    Inputs: ``ids``, a list of ints; ``pair``, a tuple (a, b); ``new_id``, an int.
    Output: a new list (``ids`` stays unchanged) in which occurrences of ``a`` immediately
    followed by ``b`` have become the single id ``new_id``: the sequence that step 3 of
    BPE training (section 2) produces.

    Design decision: where occurrences overlap, as (5, 5) does in [5, 5, 5], an id cannot
    go into two new tokens, so you must choose which occurrences to replace. Make the
    choice section 2's training makes, and work out why ``get_stats`` can then promise a
    merge more replacements than it performs.

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

        Output: the ids the tokenizer's merges give these bytes, starting from each
        byte's id (``self.byte_ids``) and merging until no neighbouring pair is a known
        merge. On text the tokenizer was trained on, the result must be exactly the
        sequence training produced; loaded with GPT-2's merges, exactly tiktoken's ids.

        Design decision: several known pairs may be present at once, and merging one can
        destroy another (with merges {(b, c): 256, (a, b): 257}, the bytes "abc" could end
        as [257, c] or as [a, 256]). Decide which pair to merge first, and why that
        choice reproduces training. You may use the library's ``get_stats`` and ``merge``
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
    Output: ``(x, y)``, two int64 arrays of shape (B, T). Row b of ``x`` is T consecutive
    tokens of ``data`` from a random start, and ``y[b, t]`` is the token that follows
    ``x[b, t]`` in ``data`` (the target of every position).

    Draw the B starts with one call ``rng.integers(low, high, size=B)`` and nothing else
    from ``rng`` (the same generator then gives the library's batch, which is how the NumPy
    core and the PyTorch mirror train on identical batches). Derive ``low`` and ``high``
    (exclusive): every window whose targets exist must be possible, none may read past the
    end. Data too short for one window raises ``ValueError`` saying so. Read the windows
    without a Python loop over the batch.
    Library: ``minilooped.data.get_batch``.
    """
    raise NotImplementedError("ex3_5: get_batch")


def token_dtype(vocab_size):
    """Exercise 3.6 -- the integer type of a ``.bin`` token file.

    Input: ``vocab_size`` V, an int. Output: a ``np.dtype``, ``np.uint16`` or ``np.uint32``
    (the two types the library's and nanoGPT's token files use), the smaller of them that
    holds every token id of a V-token vocabulary. A V that is not positive, or that no
    32-bit unsigned id can cover, raises ``ValueError``.

    Derive the largest V each type can hold (mind which ids a vocabulary of V tokens
    has), and check GPT-2's 50,257 tokens. Why does halving the bytes per token matter for
    a corpus of 9 billion tokens read through ``np.memmap``?
    Library: ``minilooped.data.prepare.token_dtype``.
    """
    raise NotImplementedError("ex3_6: token_dtype")
