"""Safetensors files: written by the core, read by torch and by the core, tied weights,
atomic writes, and clear errors for missing or corrupt files."""
import json
import os

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file as torch_load_file, save_file as torch_save_file

import minilooped as ml
from minilooped import nn
from minilooped.io import load_safetensors, save_safetensors


class Net(nn.Module):
    def __init__(self, tied=False):
        super().__init__()
        self.wte = nn.Embedding(11, 4)
        self.fc = nn.Linear(4, 6)
        self.ln = nn.LayerNorm(6)
        self.head = nn.Linear(6 if not tied else 4, 11, bias=False)
        if tied:
            self.head.weight = self.wte.weight
        self.register_buffer("mask", np.tril(np.ones((3, 3), np.float32)))


class TNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = torch.nn.Embedding(11, 4)
        self.fc = torch.nn.Linear(4, 6)
        self.ln = torch.nn.LayerNorm(6)
        self.head = torch.nn.Linear(6, 11, bias=False)
        self.register_buffer("mask", torch.tril(torch.ones(3, 3)))


def _perturbed(m):
    """Non-default values everywhere (LayerNorm starts as ones/zeros)."""
    rng = np.random.default_rng(0)
    for p in m.parameters():
        p.data = (p.data + rng.standard_normal(p.shape)).astype(p.dtype)
    return m


def test_core_file_loads_into_torch_with_identical_tensors(tmp_path):
    m = _perturbed(Net())
    path = tmp_path / "model.safetensors"
    save_safetensors(m, path)
    sd = torch_load_file(str(path))
    assert set(sd) == set(m.state_dict())
    for k, v in m.state_dict().items():
        assert sd[k].dtype == torch.float32
        np.testing.assert_array_equal(sd[k].numpy(), v)
    t = TNet()
    t.load_state_dict(sd)                                 # strict: every key, every shape
    with torch.no_grad():
        np.testing.assert_array_equal(t.fc.weight.numpy(), m.fc.weight.data)


def test_core_file_round_trips_through_load_safetensors(tmp_path):
    m = _perturbed(Net())
    save_safetensors(m, tmp_path / "m.safetensors", metadata={"step": 12, "note": "hi"})
    sd, meta = load_safetensors(tmp_path / "m.safetensors", with_metadata=True)
    assert list(sd) == list(m.state_dict()) or set(sd) == set(m.state_dict())
    for k, v in m.state_dict().items():
        assert sd[k].dtype == v.dtype and sd[k].shape == v.shape
        np.testing.assert_array_equal(sd[k], v)
    assert json.loads(meta["step"]) == 12 and meta["note"] == "hi" and meta["format"] == "pt"
    fresh = Net()
    fresh.load_state_dict(sd)
    for (k, a), (_, b) in zip(m.state_dict().items(), fresh.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_float64_and_plain_dicts(tmp_path):
    m = _perturbed(Net()).double()
    save_safetensors(m.state_dict(), tmp_path / "d.safetensors")    # a dict of arrays works too
    sd = load_safetensors(tmp_path / "d.safetensors")
    assert all(v.dtype == np.float64 for k, v in sd.items() if k != "mask")
    save_safetensors({"x": ml.Tensor(np.arange(3.0))}, tmp_path / "t.safetensors")   # and of Tensors
    np.testing.assert_array_equal(load_safetensors(tmp_path / "t.safetensors")["x"], np.arange(3.0))


def test_torch_file_loads_into_the_core(tmp_path):
    torch.manual_seed(0)
    t = TNet()
    path = tmp_path / "torch.safetensors"
    torch_save_file(t.state_dict(), str(path))
    m = Net()
    m.load_state_dict(load_safetensors(path))
    for k, v in t.state_dict().items():
        np.testing.assert_array_equal(m.state_dict()[k], v.numpy())
    save_safetensors(t.state_dict(), tmp_path / "via_core.safetensors")   # torch tensors in, same file out
    for k, v in load_safetensors(tmp_path / "via_core.safetensors").items():
        np.testing.assert_array_equal(v, t.state_dict()[k].numpy())


def test_tied_weights_are_stored_once_and_restored(tmp_path):
    m = _perturbed(Net(tied=True))
    assert m.head.weight is m.wte.weight
    path = tmp_path / "tied.safetensors"
    save_safetensors(m, path)
    with safe_open(str(path), framework="numpy") as f:
        keys = set(f.keys())
        meta = f.metadata()
    assert "wte.weight" in keys and "head.weight" not in keys    # one copy on disk
    assert json.loads(meta["minilooped.tied"]) == {"head.weight": "wte.weight"}
    sd = load_safetensors(path)
    assert set(sd) == set(m.state_dict())                        # both names come back
    np.testing.assert_array_equal(sd["head.weight"], m.wte.weight.data)
    fresh = Net(tied=True)
    fresh.load_state_dict(sd)
    assert fresh.head.weight is fresh.wte.weight
    np.testing.assert_array_equal(fresh.head.weight.data, m.wte.weight.data)


def test_atomic_write_keeps_the_previous_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    m = _perturbed(Net())
    save_safetensors(m, path)
    before = path.read_bytes()

    import safetensors.numpy

    def failing_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")         # a partial write, then the crash
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", failing_save)
    for p in m.parameters():
        p.data = p.data * 0
    with pytest.raises(OSError, match="disk full"):
        save_safetensors(m, path)
    assert path.read_bytes() == before                            # the old checkpoint is intact
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]          # and no temporary file is left


def test_save_creates_the_folder(tmp_path):
    path = tmp_path / "a" / "b" / "w.safetensors"
    save_safetensors({"x": np.ones(2, np.float32)}, path)
    assert load_safetensors(path)["x"].tolist() == [1.0, 1.0]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no weights file at '.*nope.safetensors': check the path, or "
                                                r"train/save a model first"):
        load_safetensors(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("content", [b"", b"not a safetensors file at all", b"\x10\x00\x00\x00\x00\x00\x00\x00{"])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"'.*bad.safetensors' is not a readable safetensors file .*truncated or "
                                         r"corrupt"):
        load_safetensors(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "cut.safetensors"
    save_safetensors(_perturbed(Net()), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_safetensors(path)


def test_distinct_empty_arrays_are_not_mistaken_for_tied_weights(tmp_path):
    """Tie detection compares buffer addresses; empty arrays may share a dummy address."""
    save_safetensors({"a": np.zeros((0, 3), np.float32), "b": np.zeros((0, 3), np.float32)}, tmp_path / "e.safetensors")
    with safe_open(str(tmp_path / "e.safetensors"), framework="numpy") as f:
        assert set(f.keys()) == {"a", "b"}
