"""Batches: nanoGPT's random windows from a memmapped token file, and the errors for bad inputs."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minilooped.data import TokenDataset, check_token_ids, get_batch, write_tokens
from minilooped.atomic import atomic_write_json


@pytest.fixture
def token_dir(tmp_path):
    write_tokens(tmp_path / "train.bin", np.arange(1000) % 500, 500)
    return tmp_path


def test_batch_shapes_and_shift(token_dir):
    data = TokenDataset(token_dir / "train.bin")
    assert len(data) == 1000 and data.dtype == np.uint16 and data.vocab_size is None
    x, y = get_batch(data, 4, 16, np.random.default_rng(0))
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == np.int64
    assert x.flags.c_contiguous and y.flags.c_contiguous
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # y is x shifted by one
    tokens = np.asarray(data.tokens)
    for row_x, row_y in zip(x, y):
        start = int(np.flatnonzero((tokens[:-16] == row_x[0]) & (tokens[1:-15] == row_x[1]))[0])
        np.testing.assert_array_equal(row_x, tokens[start:start + 16])
        np.testing.assert_array_equal(row_y, tokens[start + 1:start + 17])


def test_batches_are_deterministic_from_seed(token_dir):
    data = TokenDataset(token_dir / "train.bin")
    a = get_batch(data, 8, 32, np.random.default_rng(1337))
    b = data.get_batch(8, 32, np.random.default_rng(1337))
    c = get_batch(data, 8, 32, np.random.default_rng(1338))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    # Starts are rng.integers(0, len - block_size): nanoGPT's torch.randint(len(data) - block_size, ...).
    starts = np.random.default_rng(1337).integers(0, 1000 - 32, size=8)
    np.testing.assert_array_equal(a[0][:, 0], np.asarray(data.tokens)[starts])


@given(n=st.integers(2, 200), block_size=st.integers(1, 50), batch_size=st.integers(1, 8), seed=st.integers(0, 2**32))
def test_windows_stay_inside_the_data(n, block_size, batch_size, seed):
    tokens = np.arange(n)
    if n < block_size + 1:
        with pytest.raises(ValueError, match="too few for block_size"):
            get_batch(tokens, batch_size, block_size, np.random.default_rng(seed))
        return
    x, y = get_batch(tokens, batch_size, block_size, np.random.default_rng(seed))
    # With tokens = 0..n-1 each row is a run of consecutive numbers ending before n.
    np.testing.assert_array_equal(x, x[:, :1] + np.arange(block_size))
    np.testing.assert_array_equal(y, x + 1)
    assert x.min() >= 0 and y.max() <= n - 1


def test_exact_fit_uses_the_only_window():
    x, y = get_batch(np.arange(9), 3, 8, np.random.default_rng(0))
    np.testing.assert_array_equal(x, np.tile(np.arange(8), (3, 1)))
    np.testing.assert_array_equal(y, np.tile(np.arange(1, 9), (3, 1)))


def test_meta_gives_dtype_and_vocab(tmp_path):
    write_tokens(tmp_path / "val.bin", [70000, 3], 70001)
    atomic_write_json(tmp_path / "meta.json", {"dtype": "uint32", "vocab_size": 70001, "counts": {"val": 2}})
    data = TokenDataset(tmp_path / "val.bin")
    assert data.dtype == np.uint32 and data.vocab_size == 70001 and data[0] == 70000
    with pytest.raises(ValueError, match="dtype=uint16 was requested .* meta.json says the tokens are uint32"):
        TokenDataset(tmp_path / "val.bin", dtype=np.uint16)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train.bin does not exist; create it with `python -m minilooped.data shakespeare"):
        TokenDataset(tmp_path / "train.bin")


def test_corrupt_files(tmp_path):
    (tmp_path / "train.bin").write_bytes(b"\x01\x00\x02")  # 3 bytes: one and a half uint16
    with pytest.raises(ValueError, match="is corrupt: its 3 bytes are not a whole number of 2-byte uint16 tokens"):
        TokenDataset(tmp_path / "train.bin")
    (tmp_path / "train.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        TokenDataset(tmp_path / "train.bin")
    write_tokens(tmp_path / "train.bin", [1, 2, 3, 4], 10)
    atomic_write_json(tmp_path / "meta.json", {"dtype": "uint16", "counts": {"train": 5}})
    with pytest.raises(ValueError, match="meta.json records 5 tokens but the file holds 4"):
        TokenDataset(tmp_path / "train.bin")


def test_block_size_longer_than_data(tmp_path):
    write_tokens(tmp_path / "train.bin", np.arange(10), 10)
    with pytest.raises(ValueError, match=r"has 10 tokens, too few for block_size=10: .* block_size \+ 1 = 11"):
        TokenDataset(tmp_path / "train.bin", block_size=10)
    data = TokenDataset(tmp_path / "train.bin", block_size=9)
    with pytest.raises(ValueError, match=r"train.bin has 10 tokens, too few for block_size=64"):
        get_batch(data, 2, 64, np.random.default_rng(0))


def test_bad_arguments():
    with pytest.raises(TypeError, match="rng must be a numpy Generator"):
        get_batch(np.arange(100), 2, 8, 0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        get_batch(np.arange(100), 0, 8, np.random.default_rng(0))
    with pytest.raises(ValueError, match="must be 1-D"):
        get_batch(np.zeros((10, 10)), 2, 4, np.random.default_rng(0))


def test_check_token_ids(token_dir):
    check_token_ids(np.array([0, 5, 9]), 10)
    check_token_ids(TokenDataset(token_dir / "train.bin"), 500)
    with pytest.raises(ValueError, match=r"id 12 at position 2 is outside the vocabulary 0..9 \(vocab_size=10\)"):
        check_token_ids(np.array([0, 5, 12, 3]), 10)
    with pytest.raises(ValueError, match="id -1 at position 0"):
        check_token_ids(np.array([-1]), 10)
    with pytest.raises(ValueError, match=r"train.bin: id 256 at position 256 is outside the vocabulary 0..255 .* at least 500"):
        check_token_ids(TokenDataset(token_dir / "train.bin"), 256)
