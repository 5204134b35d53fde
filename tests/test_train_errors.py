"""Bad input stops a run early with a message that says what is wrong and how to fix it."""
import json

import numpy as np
import pytest

from minilooped.training import TrainingDiverged, load_checkpoint, train
from minilooped.training.cli import train_main
from _train_utils import tiny_config, tiny_data


@pytest.fixture()
def data_dir(tmp_path):
    return tiny_data(tmp_path / "data")


# ---------------------------------------------------------------- divergence
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_nan_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, data_dir, backend):
    if backend == "torch":
        pytest.importorskip("torch")
    train(tiny_config(data_dir, tmp_path / "run", max_iters=4, backend=backend))
    good = load_checkpoint(tmp_path / "run")
    # an absurd learning rate sends the weights to infinity within a step or two
    with pytest.raises(TrainingDiverged, match=r"training diverged at step \d+: the (training loss|gradient norm|"
                                               r"val loss) is (nan|inf).*the last good checkpoint is .*ckpt_0000004 "
                                               r"\(step 4\).*lower learning_rate"):
        train(tiny_config(data_dir, tmp_path / "run", max_iters=40, eval_interval=2, resume=True,
                          learning_rate=1e30, min_lr=0.0, warmup_iters=0, grad_clip=0.0))
    after = load_checkpoint(tmp_path / "run")
    assert after.step == 4
    for k in good.weights:
        np.testing.assert_array_equal(good.weights[k], after.weights[k])
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["kind"] == "diverged"


def test_cli_exits_with_the_divergence_message(tmp_path, data_dir, capsys):
    cfg = tiny_config(data_dir, tmp_path / "run", learning_rate=1e30, min_lr=0.0, warmup_iters=0, grad_clip=0.0)
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert train_main([str(path)]) == 1
    err = capsys.readouterr().err
    assert "error: training diverged at step" in err and "no checkpoint was saved yet" in err


# ---------------------------------------------------------------- data
def test_missing_data_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)no prepared data in .*nowhere \(no meta.json\)"
                                                r".*python -m minilooped.data text"):
        train(tiny_config(tmp_path / "nowhere", tmp_path / "run"))


def test_missing_data_file(tmp_path, data_dir):
    (tmp_path / "data" / "train.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"token file .*train.bin does not exist"):
        train(tiny_config(data_dir, tmp_path / "run"))


def test_corrupt_data_file(tmp_path, data_dir):
    path = tmp_path / "data" / "val.bin"
    path.write_bytes(path.read_bytes()[:-1])  # a truncated copy: half a uint16 at the end
    with pytest.raises(ValueError, match=r"val.bin is corrupt"):
        train(tiny_config(data_dir, tmp_path / "run"))


def test_corrupt_meta(tmp_path, data_dir):
    (tmp_path / "data" / "meta.json").write_text("{oops")
    with pytest.raises(ValueError, match=r"meta.json is not valid JSON"):
        train(tiny_config(data_dir, tmp_path / "run"))


def test_token_ids_beyond_the_vocabulary(tmp_path, data_dir):
    meta = json.loads((tmp_path / "data" / "meta.json").read_text())
    ids = np.fromfile(tmp_path / "data" / "train.bin", dtype=np.uint16)
    ids[100] = meta["vocab_size"] + 5  # e.g. tokenized with a bigger vocabulary
    ids.tofile(tmp_path / "data" / "train.bin")
    with pytest.raises(ValueError, match=rf"train.bin: id {meta['vocab_size'] + 5} at position 100 is outside "
                                         rf"the vocabulary"):
        train(tiny_config(data_dir, tmp_path / "run"))


def test_model_vocabulary_smaller_than_the_data(tmp_path, data_dir):
    with pytest.raises(ValueError, match=r"tokenized with \d+ ids \(char\) but the model has vocab_size=10"):
        train(tiny_config(data_dir, tmp_path / "run", vocab_size=10))


def test_block_size_longer_than_the_data(tmp_path, data_dir):
    with pytest.raises(ValueError, match=r"the val split .*val.bin has \d+ tokens, too few for block_size=5000"):
        train(tiny_config(data_dir, tmp_path / "run", block_size=5000))


def test_unknown_key_on_the_command_line(capsys):
    assert train_main(["--learning_rat=1e-3"]) == 2
    assert "unknown config key --learning_rat (did you mean 'learning_rate'?)" in capsys.readouterr().err


def test_grad_accum_must_split_over_processes(tmp_path, data_dir, monkeypatch):
    pytest.importorskip("torch")
    from minilooped.training import ddp

    monkeypatch.setattr(ddp, "setup", lambda device: ddp.DistInfo(rank=0, world_size=2, device=device))
    monkeypatch.setattr(ddp, "launched_by_torchrun", lambda: True)
    with pytest.raises(ValueError, match="grad_accum=3 must be a multiple of the 2 processes"):
        train(tiny_config(data_dir, tmp_path / "run", backend="torch", grad_accum=3))
    with pytest.raises(ValueError, match="distributed training needs --backend=torch"):
        train(tiny_config(data_dir, tmp_path / "run"))
