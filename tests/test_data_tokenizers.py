"""Tokenizers: GPT-2 through tiktoken (offline, hash-checked), BPE from scratch, characters."""
import json
import shutil

import pytest
from hypothesis import given, strategies as st

from minilooped.data.corpora import shakespeare_text
from minilooped.data.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    GPT2_SPLIT_PATTERN,
    GPT2FileError,
    build_gpt2_encoding,
    get_gpt2_tokenizer,
    get_stats,
    get_tokenizer,
    gpt2_file_paths,
    merge,
)
from minilooped.data.tokenizers.gpt2_files import EXPECTED_SHA256, sha256_of


@pytest.fixture(scope="module")
def gpt2():
    return get_gpt2_tokenizer()


@pytest.fixture(scope="module")
def scratch_gpt2():
    return BPETokenizer.from_gpt2()


@pytest.fixture(scope="module")
def sample():
    return shakespeare_text()[:300_000]


# ------------------------------------------------------------------ GPT-2 via tiktoken
def test_gpt2_known_ids(gpt2):
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.n_vocab == 50257 and gpt2.eot_token == 50256
    assert gpt2.encode("<|endoftext|>", allowed_special={"<|endoftext|>"}) == [50256]
    assert gpt2.encode_ordinary("<|endoftext|>") != [50256]  # plain text, not the special token
    assert gpt2.decode(gpt2.encode("To be, or not to be")) == "To be, or not to be"
    assert get_gpt2_tokenizer() is gpt2  # cached


def test_gpt2_files_match_tiktoken_pins():
    from tiktoken_ext.openai_public import r50k_pat_str

    vocab_bpe, encoder_json = gpt2_file_paths()
    assert sha256_of(vocab_bpe) == EXPECTED_SHA256["vocab.bpe"].lower()
    assert sha256_of(encoder_json) == EXPECTED_SHA256["encoder.json"]
    assert GPT2_SPLIT_PATTERN == r50k_pat_str
    # The same hashes tiktoken itself pins (read from its source, not copied by hand).
    import inspect
    import tiktoken_ext.openai_public as public

    source = inspect.getsource(public.gpt2)
    assert EXPECTED_SHA256["vocab.bpe"] in source and EXPECTED_SHA256["encoder.json"] in source


def test_gpt2_tampered_file_gives_clear_error(tmp_path):
    vocab_bpe, encoder_json = gpt2_file_paths()
    bad_vocab = tmp_path / "vocab.bpe"
    shutil.copy(vocab_bpe, bad_vocab)
    with open(bad_vocab, "ab") as f:
        f.write(b"x")
    with pytest.raises(GPT2FileError, match=r"SHA-256 .* but the vocab.bpe that tiktoken pins"):
        build_gpt2_encoding(bad_vocab, encoder_json)
    with pytest.raises(GPT2FileError, match="not found"):
        build_gpt2_encoding(tmp_path / "missing.bpe", encoder_json)


def test_gpt2_build_writes_no_cache(tmp_path, monkeypatch):
    # tiktoken would copy the files into $TMPDIR/data-gym-cache; we read them in place.
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    enc = build_gpt2_encoding(*gpt2_file_paths())
    assert enc.encode("Hello world") == [15496, 995]
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ BPE from scratch
def test_get_stats_and_merge():
    assert get_stats([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert get_stats([7]) == {}
    assert merge([1, 2, 3, 1, 2], (1, 2), 4) == [4, 3, 4]
    assert merge([5, 5, 5], (5, 5), 9) == [9, 5]  # left to right, no overlap
    assert merge([], (1, 2), 3) == []


def test_from_gpt2_equals_tiktoken_on_shakespeare(gpt2, scratch_gpt2, sample):
    ids = scratch_gpt2.encode(sample)
    assert ids == gpt2.encode_ordinary(sample)
    assert scratch_gpt2.decode(ids) == sample
    assert scratch_gpt2.n_vocab == 50257 and scratch_gpt2.eot_token == 50256
    assert scratch_gpt2.decode([50256]) == "<|endoftext|>"
    assert scratch_gpt2.decode(range(50257))  # every id decodes
    with pytest.raises(ValueError, match="token id 50257 is not in this BPE"):
        scratch_gpt2.decode([50257])


@given(st.text(max_size=200))
def test_from_gpt2_equals_tiktoken_on_random_text(gpt2, scratch_gpt2, text):
    ids = scratch_gpt2.encode(text)
    assert ids == gpt2.encode_ordinary(text)
    assert scratch_gpt2.decode(ids) == text


@pytest.fixture(scope="module")
def tiny_bpe(sample):
    return BPETokenizer().train(sample[:20_000], vocab_size=300)


def test_train_tiny_bpe(tiny_bpe, sample):
    assert tiny_bpe.n_vocab == 300 and len(tiny_bpe.merges) == 44
    assert sorted(tiny_bpe.merges.values()) == list(range(256, 300))
    text = sample[20_000:30_000]  # text it did not train on
    ids = tiny_bpe.encode(text)
    assert tiny_bpe.decode(ids) == text
    assert len(ids) < len(text.encode("utf-8"))  # merges compress
    # Deterministic: training again gives the same merges.
    assert BPETokenizer().train(sample[:20_000], vocab_size=300).merges == tiny_bpe.merges
    # The first merge is the most frequent pair of bytes inside the pre-token chunks.
    import regex

    counts = {}
    for chunk in regex.findall(GPT2_SPLIT_PATTERN, sample[:20_000]):
        for pair, n in get_stats(list(chunk.encode("utf-8"))).items():
            counts[pair] = counts.get(pair, 0) + n
    assert next(iter(tiny_bpe.merges)) == max(counts, key=lambda p: (counts[p], -p[0], -p[1]))


def test_train_equals_naive_recount(sample):
    # train() updates pair counts incrementally; recounting everything each step must agree.
    import regex
    from collections import Counter

    text = sample[30_000:40_000]
    chunks = Counter(regex.findall(GPT2_SPLIT_PATTERN, text))
    words, weights = [list(c.encode("utf-8")) for c in chunks], list(chunks.values())
    naive = {}
    for new_id in range(256, 330):
        stats = {}
        for word, weight in zip(words, weights):
            for pair, count in get_stats(word).items():
                stats[pair] = stats.get(pair, 0) + count * weight
        pair = max(stats, key=lambda p: (stats[p], -p[0], -p[1]))
        naive[pair] = new_id
        words = [merge(word, pair, new_id) for word in words]
    assert BPETokenizer().train(text, 330).merges == naive


@given(st.text(max_size=100))
def test_tiny_bpe_roundtrip_on_random_text(tiny_bpe, text):
    assert tiny_bpe.decode(tiny_bpe.encode(text)) == text


def test_bpe_train_stops_when_nothing_to_merge():
    tok = BPETokenizer().train("ab ab", vocab_size=1000)
    assert tok.n_vocab < 1000 and tok.decode(tok.encode("ab ab ba")) == "ab ab ba"
    with pytest.raises(ValueError, match="vocab_size must be at least 256"):
        BPETokenizer().train("abc", vocab_size=100)


def test_bpe_save_load(tmp_path, tiny_bpe, sample):
    path = tmp_path / "bpe.json"
    tiny_bpe.save(path)
    assert not (tmp_path / "bpe.json.tmp").exists()
    loaded = BPETokenizer.load(path)
    assert loaded.merges == tiny_bpe.merges
    assert loaded.encode(sample[:5000]) == tiny_bpe.encode(sample[:5000])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BPETokenizer.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid BPE tokenizer file"):
        BPETokenizer.load(tmp_path / "bad.json")
    (tmp_path / "char.json").write_text(json.dumps({"format": "minilooped.char", "version": 1, "chars": "ab"}))
    with pytest.raises(ValueError, match="not a minilooped.bpe file"):
        BPETokenizer.load(tmp_path / "char.json")


def test_gpt2_bpe_save_load(tmp_path, scratch_gpt2, gpt2):
    scratch_gpt2.save(tmp_path / "gpt2.json")
    loaded = BPETokenizer.load(tmp_path / "gpt2.json")
    text = "Loaded merges give GPT-2's ids: 1234 héllo\n\n  x"
    assert loaded.encode(text) == gpt2.encode_ordinary(text)
    assert loaded.eot_token == 50256


def test_bpe_rejects_invalid_merges():
    with pytest.raises(ValueError, match="invalid merge"):
        BPETokenizer(merges={(256, 1): 257})  # 256 does not exist yet
    with pytest.raises(ValueError, match="256 distinct ids"):
        BPETokenizer(byte_ids=[0] * 256)


# ------------------------------------------------------------------ characters
def test_char_tokenizer(tmp_path):
    tok = CharTokenizer("hello world")
    assert tok.chars == [" ", "d", "e", "h", "l", "o", "r", "w"] and tok.n_vocab == 8
    assert tok.encode("hello") == [3, 2, 4, 4, 5]
    assert tok.decode(tok.encode("low world")) == "low world"
    with pytest.raises(ValueError, match=r"character 'z' \(U\+007A\) at position 2 is not in"):
        tok.encode("hoz")
    with pytest.raises(ValueError, match=r"token id 8 is not in .* \(ids 0..7\)"):
        tok.decode([8])
    with pytest.raises(ValueError, match="non-empty text"):
        CharTokenizer("")
    tok.save(tmp_path / "char.json")
    assert CharTokenizer.load(tmp_path / "char.json").chars == tok.chars
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CharTokenizer.load(tmp_path / "missing.json")


def test_char_tokenizer_on_shakespeare(sample):
    tok = CharTokenizer(sample)
    assert tok.decode(tok.encode(sample)) == sample
    assert tok.chars == sorted(set(sample))


# ------------------------------------------------------------------ factory
def test_get_tokenizer(tmp_path, tiny_bpe):
    assert get_tokenizer("gpt2") is get_gpt2_tokenizer()
    assert get_tokenizer("char", text="abc").n_vocab == 3
    tiny_bpe.save(tmp_path / "t.json")
    assert get_tokenizer("bpe", path=tmp_path / "t.json").merges == tiny_bpe.merges
    assert get_tokenizer("bpe", text="aaaa bbbb", vocab_size=258).n_vocab == 258
    with pytest.raises(ValueError, match="unknown tokenizer 'sentencepiece'"):
        get_tokenizer("sentencepiece")
    with pytest.raises(ValueError, match="needs path="):
        get_tokenizer("char")
    with pytest.raises(ValueError, match="takes no text"):
        get_tokenizer("gpt2", text="x")
