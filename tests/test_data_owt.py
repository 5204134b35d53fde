"""OpenWebText preparation (nanoGPT's recipe) on a small local parquet dataset made here."""
import contextlib
import inspect
import io
import json
import shutil

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
datasets = pytest.importorskip("datasets")

from minilooped.data import owt  # noqa: E402
from minilooped.data.owt import prepare_openwebtext  # noqa: E402
from minilooped.data.tokenizers import get_gpt2_tokenizer  # noqa: E402

N_DOCS = 300
TEST_SIZE = 0.1  # the real default (0.0005) would leave 1 of 300 documents for val


def _docs():
    words = ["looped", "transformers", "share", "weights", "across", "depth", "naïve", "日本", "42", "!"]
    docs = [" ".join(words[(i * j) % len(words)] for j in range(3 + i % 17)) + f". Doc {i}." for i in range(N_DOCS)]
    docs[7] = "A page that literally contains <|endoftext|> as text."
    docs[11] = ""  # empty documents still get their EOT
    return docs


@pytest.fixture(scope="module")
def owt_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("owt")
    docs = _docs()
    (root / "parquet").mkdir()
    pq.write_table(pa.table({"text": docs[:120], "id": list(range(120))}), root / "parquet" / "part-0.parquet")
    pq.write_table(pa.table({"text": docs[120:], "id": list(range(120, N_DOCS))}), root / "parquet" / "part-1.parquet")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        meta = prepare_openwebtext(root / "parquet", root / "out", num_proc=1, test_size=TEST_SIZE,
                                   num_shards=8, cache_dir=root / "cache")
    return root, meta, out.getvalue()


def _split_docs(path):
    """Cut a .bin at every EOT and decode each document."""
    ids = np.fromfile(path, dtype=np.uint16)
    assert ids[-1] == 50256
    ends = np.flatnonzero(ids == 50256)
    starts = np.concatenate([[0], ends[:-1] + 1])
    enc = get_gpt2_tokenizer()
    return [enc.decode(ids[s:e].tolist()) for s, e in zip(starts, ends)]


def test_defaults_are_nanogpts():
    params = inspect.signature(prepare_openwebtext).parameters
    assert params["test_size"].default == 0.0005 and params["seed"].default == 2357
    assert owt.DEFAULT_DATA_FILES.startswith("hf://datasets/Skylion007/openwebtext@refs/convert/parquet/")


def test_split_matches_train_test_split_and_eot_after_each_doc(owt_run):
    root, meta, _ = owt_run
    files = sorted(str(p) for p in (root / "parquet").glob("*.parquet"))
    reference = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(root / "cache"))
    reference = reference.train_test_split(test_size=TEST_SIZE, seed=2357, shuffle=True)
    expected = {"train": reference["train"]["text"], "val": reference["test"]["text"]}
    assert len(expected["val"]) == 30
    for split in ("train", "val"):
        docs = _split_docs(root / "out" / f"{split}.bin")
        assert docs == list(expected[split])  # same documents, same order, one EOT after each
        assert meta["documents"][split] == len(docs)
        assert meta["counts"][split] == (root / "out" / f"{split}.bin").stat().st_size // 2
    assert meta["documents"]["train"] + meta["documents"]["val"] == N_DOCS
    assert meta["tokenizer"] == "gpt2" and meta["dtype"] == "uint16" and meta["seed"] == 2357


def test_counts_printed(owt_run):
    _, meta, printed = owt_run
    for split in ("train", "val"):
        assert f"{split}: {meta['documents'][split]:,} documents, {meta['counts'][split]:,} tokens" in printed


def test_resume_skips_finished_and_redoes_partial(owt_run, tmp_path, capsys):
    root, meta, _ = owt_run
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    train_before = (out / "train.bin").read_bytes()
    mtime = (out / "train.bin").stat().st_mtime_ns

    # Everything finished: nothing is loaded (the data files need not even exist).
    again = prepare_openwebtext(tmp_path / "gone", out, num_proc=1, test_size=TEST_SIZE)
    assert again == meta
    assert "train: already prepared" in capsys.readouterr().out

    # A crash while writing val: no val.bin, a partial val.bin.tmp.
    val_before = (out / "val.bin").read_bytes()
    (out / "val.bin").unlink()
    (out / "val.bin.tmp").write_bytes(b"partial")
    redone = prepare_openwebtext(root / "parquet", out, num_proc=2, test_size=TEST_SIZE,
                                 num_shards=8, cache_dir=tmp_path / "cache")
    printed = capsys.readouterr().out
    assert "train: already prepared" in printed and "val: already prepared" not in printed
    assert (out / "val.bin").read_bytes() == val_before
    assert not (out / "val.bin.tmp").exists()
    assert (out / "train.bin").stat().st_mtime_ns == mtime and (out / "train.bin").read_bytes() == train_before
    assert redone == meta

    # A truncated train.bin does not count as finished either.
    (out / "train.bin").write_bytes(train_before[:100])
    prepare_openwebtext(root / "parquet", out, num_proc=1, test_size=TEST_SIZE, num_shards=8, cache_dir=tmp_path / "cache")
    assert (out / "train.bin").read_bytes() == train_before


def test_changed_split_settings_refused(owt_run, tmp_path):
    root, _, _ = owt_run
    shutil.copytree(root / "out", tmp_path / "out")
    with pytest.raises(ValueError, match=r"holds splits made with test_size=0.1, seed=2357, not test_size=0.1, seed=1"):
        prepare_openwebtext(root / "parquet", tmp_path / "out", num_proc=1, test_size=TEST_SIZE, seed=1)


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="parquet file .*missing.parquet does not exist"):
        prepare_openwebtext(tmp_path / "missing.parquet", tmp_path / "out", num_proc=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="contains no .parquet files"):
        prepare_openwebtext(tmp_path / "empty", tmp_path / "out", num_proc=1)
    pq.write_table(pa.table({"body": ["no text column"] * 4}), tmp_path / "x.parquet")
    with pytest.raises(ValueError, match=r"columns \['body'\]; a 'text' column is needed"):
        prepare_openwebtext(tmp_path / "x.parquet", tmp_path / "out", num_proc=1, cache_dir=tmp_path / "cache")
    (tmp_path / "out2").mkdir()
    (tmp_path / "out2" / "meta.json").write_text("{broken")
    with pytest.raises(ValueError, match="is not valid JSON"):
        prepare_openwebtext(tmp_path / "x.parquet", tmp_path / "out2", num_proc=1)


def test_cli_openwebtext(owt_run, tmp_path, capsys):
    from minilooped.data.cli import main

    root, _, _ = owt_run
    # With the default test_size (0.0005) only ceil(0.0005 * 300) = 1 document goes to val.
    assert main(["openwebtext", "--data-files", str(root / "parquet"), "--out", str(tmp_path / "cli"),
                 "--num-proc", "1", "--cache-dir", str(tmp_path / "cache")]) == 0
    printed = capsys.readouterr().out
    written = json.loads((tmp_path / "cli" / "meta.json").read_text())
    assert written["test_size"] == 0.0005 and written["documents"]["val"] == 1  # ceil(0.0005 * 300)
    assert f"val: 1 documents, {written['counts']['val']:,} tokens" in printed
