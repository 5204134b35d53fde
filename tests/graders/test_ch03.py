"""Graders of chapter 3 (exercises/ch03_tokens.py): BPE pair counts and merges, encoding
by replaying merges (against tiktoken's GPT-2), the character tokenizer, random
training windows from a memmap. Oracles: collections.Counter, tiktoken, the library."""
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minilooped.data import TokenDataset
from minilooped.data import get_batch as reference_get_batch
from minilooped.data.tokenizers import bpe as library_bpe
from minilooped.data.tokenizers import get_gpt2_tokenizer
from minilooped.data.tokenizers.char import CharTokenizer as LibraryCharTokenizer
from minilooped.grading.checks import GradingError, assert_equal, check, grader_settings

small_ids = st.lists(st.integers(0, 5), max_size=40)


# ------------------------------------------------------------------ ex3_1 get_stats
@pytest.mark.ex3_1
def test_get_stats_example(impl):
    assert_equal(impl([1, 2, 3, 1, 2]), {(1, 2): 2, (2, 3): 1, (3, 1): 1}, "get_stats([1, 2, 3, 1, 2])")


@pytest.mark.ex3_1
def test_get_stats_short_and_overlapping(impl):
    assert_equal(impl([]), {}, "get_stats([])")
    assert_equal(impl([4]), {}, "get_stats([4])", hint="one id has no neighbour: no pairs")
    assert_equal(impl([7, 7, 7]), {(7, 7): 2}, "get_stats([7, 7, 7])",
                 hint="pairs overlap when counting: positions (0, 1) and (1, 2)")


@pytest.mark.ex3_1
@grader_settings(50)
@given(small_ids)
def test_get_stats_random_lists(impl, ids):
    assert_equal(impl(list(ids)), dict(Counter(zip(ids, ids[1:]))), f"get_stats({ids})",
                 hint="count zip(ids, ids[1:])")


# ---------------------------------------------------------------------- ex3_2 merge
@pytest.mark.ex3_2
def test_merge_example(impl):
    assert_equal(impl([1, 2, 3, 1, 2], (1, 2), 4), [4, 3, 4], "merge([1, 2, 3, 1, 2], (1, 2), 4)")


@pytest.mark.ex3_2
def test_merge_does_not_overlap(impl):
    assert_equal(impl([5, 5, 5], (5, 5), 9), [9, 5], "merge([5, 5, 5], (5, 5), 9)",
                 hint="after replacing a pair, continue after its second id (i += 2)")
    assert_equal(impl([5, 5, 5, 5], (5, 5), 9), [9, 9], "merge([5, 5, 5, 5], (5, 5), 9)")


@pytest.mark.ex3_2
def test_merge_edges_and_no_mutation(impl):
    ids = [1, 2, 3]
    assert_equal(impl(ids, (3, 4), 9), [1, 2, 3], "merge([1, 2, 3], (3, 4), 9)",
                 hint="a pair that does not occur changes nothing; watch the last position")
    assert_equal(impl(ids, (2, 3), 9), [1, 9], "merge([1, 2, 3], (2, 3), 9)", hint="a pair at the very end")
    assert_equal(ids, [1, 2, 3], "the input list after merge", hint="build a new list; do not modify ids")
    assert_equal(impl([], (1, 2), 9), [], "merge([], (1, 2), 9)")


@pytest.mark.ex3_2
@grader_settings(60)
@given(small_ids, st.tuples(st.integers(0, 5), st.integers(0, 5)))
def test_merge_random_lists(impl, ids, pair):
    got = impl(list(ids), pair, 99)
    assert_equal(got, library_bpe.merge(ids, pair, 99), f"merge({ids}, {pair}, 99)",
                 hint="scan left to right; on a match append new_id and skip two, else append one and skip one")
    expanded = [x for i in got for x in (pair if i == 99 else (i,))]
    assert_equal(expanded, list(ids), "the merged list with every new_id expanded back into the pair")


# --------------------------------------------------------- ex3_3 encode with merges
@pytest.fixture(scope="module")
def tiny_merges():
    """Merges learned by the library from a small text (your get_stats/merge are not used)."""
    tok = library_bpe.BPETokenizer().train("low lower lowest newer newest wider widest " * 20, vocab_size=280)
    return tok.merges


_ORDER_HINT = ("apply the merge with the smallest new id among the pairs present, everywhere, then look again; "
               "not left to right")


@pytest.mark.ex3_3
def test_encode_applies_merges_in_learning_order(impl):
    a, b, c = b"abc"
    tok = impl(merges={(b, c): 256, (a, b): 257, (a, 256): 258})
    assert_equal(tok._encode_chunk(b"abc"), [258], "encode b'abc' with merges {(b, c): 256, (a, b): 257, "
                 "(a, 256): 258}", hint=_ORDER_HINT)
    tok = impl(merges={(b, c): 256, (a, b): 257})
    assert_equal(tok._encode_chunk(b"abcab"), [a, 256, 257], "encode b'abcab' with merges {(b, c): 256, "
                 "(a, b): 257}", hint=_ORDER_HINT)
    assert_equal(tok._encode_chunk(b""), [], "encode b''")
    assert_equal(tok._encode_chunk(b"c"), [c], "encode b'c'")


@pytest.mark.ex3_3
def test_encode_matches_the_library_on_trained_merges(impl, tiny_merges):
    mine, ref = impl(merges=tiny_merges), library_bpe.BPETokenizer(merges=tiny_merges)
    for text in ["lowest", " newest", "slow", "widerlow", " lowlowlow", "é"]:
        chunk = text.encode("utf-8")
        assert_equal(mine._encode_chunk(chunk), ref._encode_chunk(chunk), f"encode {chunk!r} with 24 trained merges",
                     hint=_ORDER_HINT)
    text = "the lowest newer widest, lower than low."
    assert_equal(mine.encode(text), ref.encode(text), f"encode({text!r})")


@pytest.mark.ex3_3
def test_encode_reproduces_gpt2(impl):
    mine = impl.from_gpt2()  # GPT-2's 50,000 merges; its byte ids are not 0..255 in order
    text = "Hello world! Tokenizers are surprisingly subtle: naïve code breaks on ünïcödé and 12345."
    assert_equal(mine.encode(text), get_gpt2_tokenizer().encode_ordinary(text), f"GPT-2 encoding of {text!r}",
                 hint="start from self.byte_ids[b] for each byte b (GPT-2 numbers its bytes in another order)")


# --------------------------------------------------------------- ex3_4 char tokenizer
@pytest.mark.ex3_4
def test_char_tokenizer_vocabulary(impl):
    tok = impl("hello world")
    ref = LibraryCharTokenizer("hello world")
    assert_equal(tok.chars, ref.chars, "chars of 'hello world'", hint="sorted(set(text))")
    assert_equal(tok.stoi, ref.stoi, "stoi of 'hello world'")
    assert_equal(tok.itos, ref.itos, "itos of 'hello world'")
    assert_equal(tok.n_vocab, 8, "n_vocab of 'hello world'")


@pytest.mark.ex3_4
def test_char_tokenizer_encode_decode(impl):
    tok = impl("hello")
    assert_equal(tok.encode("hole"), [1, 3, 2, 0], "CharTokenizer('hello').encode('hole')")
    assert_equal(tok.decode([1, 0, 2, 2, 3]), "hello", "CharTokenizer('hello').decode([1, 0, 2, 2, 3])")
    assert_equal(tok.decode(np.array([3, 2], dtype=np.int64)), "ol", "decode of a NumPy int64 array",
                 hint="convert NumPy integers with int(i)")


@pytest.mark.ex3_4
def test_char_tokenizer_errors(impl):
    tok = impl("abc")
    for bad, call in (("encode('abz')", lambda: tok.encode("abz")), ("decode([0, 3])", lambda: tok.decode([0, 3]))):
        try:
            call()
        except ValueError:
            continue
        except Exception as e:
            raise GradingError(f"CharTokenizer('abc').{bad} raised {type(e).__name__}: {e}; expected ValueError") \
                from None
        check(False, f"CharTokenizer('abc').{bad} returned normally; expected ValueError",
              hint="catch the KeyError and raise ValueError naming the character (or id)")


@pytest.mark.ex3_4
@grader_settings(40)
@given(st.text(min_size=1, max_size=30), st.data())
def test_char_tokenizer_round_trip(impl, text, data):
    tok = impl(text)
    sample = "".join(data.draw(st.lists(st.sampled_from(sorted(set(text))), max_size=20)))
    ids = tok.encode(sample)
    assert_equal(ids, LibraryCharTokenizer(text).encode(sample), f"encode({sample!r}) with the vocabulary of {text!r}")
    assert_equal(tok.decode(ids), sample, f"decode(encode({sample!r}))")


# ------------------------------------------------------------------ ex3_5 get_batch
@pytest.fixture
def token_file(tmp_path):
    """A .bin file of 1,000 uint16 token ids, opened as a memmap."""
    ids = (np.arange(1000) * 7 % 1009).astype(np.uint16)
    path = tmp_path / "train.bin"
    ids.tofile(path)
    return path, np.memmap(path, dtype=np.uint16, mode="r")


@pytest.mark.ex3_5
def test_get_batch_shapes_and_shift(impl, token_file):
    _, data = token_file
    x, y = impl(data, 4, 8, np.random.default_rng(0))
    for name, a in (("x", x), ("y", y)):
        check(isinstance(a, np.ndarray) and a.shape == (4, 8) and a.dtype == np.int64,
              f"{name}: expected an int64 array of shape (4, 8), got "
              f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}",
              hint="np.stack the windows and .astype(np.int64) (uint16 would overflow in the model's indexing)")
    assert_equal(x[:, 1:], y[:, :-1], "x[:, 1:] against y[:, :-1]", hint="y is x shifted left by one token")


@pytest.mark.ex3_5
def test_get_batch_same_windows_as_nanogpt(impl, token_file):
    _, data = token_file
    got = impl(data, 6, 16, np.random.default_rng(123))
    expected = reference_get_batch(data, 6, 16, np.random.default_rng(123))
    hint = ("draw the starts with one call rng.integers(low, high, size=batch_size) and nothing else from rng; "
            "high is exclusive: one more than the largest valid start")
    assert_equal(got[0], expected[0], "x for rng seed 123", hint=hint)
    assert_equal(got[1], expected[1], "y for rng seed 123", hint=hint)


@pytest.mark.ex3_5
def test_get_batch_reaches_the_last_window(impl):
    data = np.arange(11, dtype=np.uint16)  # block_size 8: starts 0, 1, 2 are the only windows
    x, y = impl(data, 300, 8, np.random.default_rng(0))
    starts = set(x[:, 0].tolist())
    check(starts == {0, 1, 2}, f"11 tokens, block_size 8: the window starts drawn were {sorted(starts)}, "
          "expected all of 0, 1, 2", hint="the largest start is the one whose last target is the last token of data")
    check(int(y.max()) == 10, f"the last token (10) must be reachable as a target, max target was {int(y.max())}")


@pytest.mark.ex3_5
def test_get_batch_token_dataset_and_errors(impl, token_file):
    path, data = token_file
    x, _ = impl(TokenDataset(path), 2, 4, np.random.default_rng(5))
    assert_equal(x, reference_get_batch(data, 2, 4, np.random.default_rng(5))[0], "x from a TokenDataset",
                 hint="a TokenDataset keeps its ids in data.tokens")
    try:
        impl(np.arange(8), 2, 8, np.random.default_rng(0))
    except ValueError:
        return
    except Exception as e:
        raise GradingError(f"8 tokens with block_size 8 raised {type(e).__name__}: {e}; expected ValueError") \
            from None
    check(False, "8 tokens with block_size 8 returned normally; expected ValueError (a window needs 9 tokens)")


# ---------------------------------------------------------------- ex3_6 token_dtype
@pytest.mark.ex3_6
def test_token_dtype_boundaries(impl):
    for V, want in ((1, np.uint16), (256, np.uint16), (257, np.uint16), (50257, np.uint16),
                    (2**16, np.uint16), (2**16 + 1, np.uint32), (2**32, np.uint32)):
        got = impl(V)
        check(np.dtype(got) == np.dtype(want), f"token_dtype({V}) returned {got}, expected {np.dtype(want).name}",
              hint="a vocabulary of V tokens has the ids 0 .. V - 1: a type of b bits holds V up to 2**b")


@pytest.mark.ex3_6
def test_token_dtype_rejects_impossible_vocabularies(impl):
    for V in (0, -3, 2**32 + 1):
        try:
            got = impl(V)
        except ValueError:
            continue
        except Exception as e:
            raise GradingError(f"token_dtype({V}) raised {type(e).__name__}: {e}; expected ValueError") from None
        check(False, f"token_dtype({V}) returned {got}; expected ValueError",
              hint="no vocabulary is empty, and ids above 2**32 - 1 fit no 32-bit type")


@pytest.mark.ex3_6
def test_token_dtype_holds_the_largest_id(impl):
    for V in (1000, 2**16, 2**16 + 1, 2**20):
        dt = np.dtype(impl(V))
        check(np.array([V - 1]).astype(dt)[0] == V - 1, f"token_dtype({V}) = {dt.name} cannot hold the id {V - 1}")
