"""The core and the mirror train alike: the default config from the same initial weights
gives the same losses step after step.

Same weights (the mirror's init, saved with minilooped.io and loaded by both through
init_from), same batches (one NumPy seed), same schedule and optimizer: the two
engines differ only in float32 rounding, which 30 AdamW steps amplify a little.
Tolerance: 1e-4 absolute on every step's loss (measured: 7e-7).
"""
import numpy as np
import pytest

from minilooped.io import save_safetensors
from minilooped.training import apply_overrides, load_config, train
from _train_utils import losses

torch = pytest.importorskip("torch")
STEPS = 30
TOL = 1e-4


@pytest.mark.slow
def test_core_and_mirror_give_close_losses_on_the_default_config(tmp_path):
    from minilooped.torch.models import GPT
    from minilooped.training.run_data import ensure_prepared

    base = load_config()
    data_dir = ensure_prepared(base)
    import json

    vocab = json.loads((data_dir / "meta.json").read_text())["vocab_size"]
    torch.manual_seed(0)
    save_safetensors(GPT(base.model_config(vocab_size=vocab)), tmp_path / "init.safetensors")
    curves = {}
    for backend in ("numpy", "torch"):
        cfg = apply_overrides(base, {"backend": backend, "max_iters": str(STEPS), "eval_interval": str(STEPS),
                                     "eval_iters": "2", "progress": "false", "init_from": str(tmp_path / "init.safetensors"),
                                     "out_dir": str(tmp_path / backend)})
        train(cfg)
        curves[backend] = np.array(losses(tmp_path / backend))
    assert len(curves["numpy"]) == STEPS
    diff = np.abs(curves["numpy"] - curves["torch"])
    print("max |loss diff|", diff.max())
    assert diff.max() < TOL, diff
    assert curves["numpy"][-1] < curves["numpy"][0] - 0.5  # and both actually learn
