"""Continuous depth-wise batching (minilooped/models/depthwise_batching.py and its mirror).

Every request runs exactly its exit depth, and its next-token logits equal the model's
own, run alone and cut at that depth; plain batching gives the same logits; the compute
counted is sum of depths; core and mirror agree; models whose loop is not one shared
function are refused.
"""
import numpy as np
import pytest
import torch

import minilooped as ml
from minilooped.models import GPT, GPTConfig
from minilooped.models.depthwise_batching import (DepthwiseBatcher, continuous_batching, exit_depths,
                                                   static_batching, throughput)
from minilooped.models.early_exit import loop_logits
from minilooped.torch.models import GPT as TorchGPT
from minilooped.torch.models import from_gpt2 as torch_from_gpt2
from minilooped.torch.models.depthwise_batching import DepthwiseBatcher as TorchDepthwiseBatcher

torch.set_num_threads(1)
TINY = dict(vocab_size=32, n_embd=16, n_head=2, block_size=8, n_layer=2)
VARIANTS = {
    "loop_residual": dict(variant="loop_residual", n_layer=3, n_prelude=1, n_coda=1, n_loops=4),
    "contractive": dict(variant="contractive", n_layer=1, n_loops=4, dt=0.5),
    "parcae": dict(variant="parcae", n_layer=3, n_prelude=1, n_coda=1, n_loops=4, h0="zeros"),
    "recursive": "recursive",
}


def build_pair(name):
    torch.manual_seed(0)
    spec = VARIANTS[name]
    if spec == "recursive":
        mirror = torch_from_gpt2(TorchGPT(GPTConfig(**{**TINY, "n_layer": 8})).double(), 2)  # 2 blocks x 4 loops
    else:
        mirror = TorchGPT(GPTConfig(**{**TINY, **spec})).double()
    core = GPT(mirror.config).to("float64")
    core.load_state_dict({k: v.detach().numpy() for k, v in mirror.state_dict().items()})
    return mirror.eval(), core.eval()


def requests(N=7, T=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 32, size=(N, T)), rng.integers(1, 5, size=N)


def alone(core, x, d):
    with ml.no_grad():
        return core(ml.Tensor(x[None]), n_loops=int(d))[0].numpy()[0, -1]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_request_gets_its_depth_and_its_own_logits(name):
    _, core = build_pair(name)
    idx, depths = requests()
    batcher = DepthwiseBatcher(core, slots=3)
    logits = batcher.run(idx, depths)
    np.testing.assert_array_equal(batcher.loops_run, depths)
    assert batcher.row_loops == depths.sum()  # no row ever waits
    assert batcher.calls < depths.sum()  # rows at different depths share calls
    for i in range(len(idx)):
        np.testing.assert_allclose(logits[i], alone(core, idx[i], depths[i]), rtol=1e-10, atol=1e-12)
    again, again_row_loops = continuous_batching(core, idx, depths, 3)
    np.testing.assert_array_equal(again, logits)
    assert again_row_loops == depths.sum()
    plain, row_loops = static_batching(core, idx, depths, 3)
    np.testing.assert_allclose(plain, logits, rtol=1e-10, atol=1e-12)
    groups = [depths[i:i + 3] for i in range(0, 7, 3)]
    assert row_loops == sum(len(g) * g.max() for g in groups)


def test_one_slot_is_one_request_at_a_time():
    _, core = build_pair("loop_residual")
    idx, depths = requests(N=4)
    batcher = DepthwiseBatcher(core, slots=1)
    batcher.run(idx, depths)
    assert batcher.calls == depths.sum()


def test_core_and_mirror_agree():
    mirror, core = build_pair("parcae")
    idx, depths = requests()
    np.testing.assert_allclose(DepthwiseBatcher(core, 3).run(idx, depths),
                               TorchDepthwiseBatcher(mirror, 3).run(idx, depths), rtol=1e-9, atol=1e-12)


def test_exit_depths_follow_the_rule():
    _, core = build_pair("loop_residual")
    idx, _ = requests(N=12)
    assert (exit_depths(core, idx, "max_prob", 0.0) == 1).all()
    assert (exit_depths(core, idx, "max_prob", 1.5) == 4).all()
    with ml.no_grad():
        p = np.stack([z.softmax(dim=-1).numpy()[:, -1].max(-1) for z in loop_logits(core, ml.Tensor(idx))])  # (4, N)
    threshold = float(np.median(p[0]))
    expected = [next((t + 1 for t in range(4) if p[t, i] >= threshold), 4) for i in range(12)]
    np.testing.assert_array_equal(exit_depths(core, idx, "max_prob", threshold), expected)


def test_throughput_reports_the_three_schedules():
    _, core = build_pair("loop_residual")
    idx, depths = requests(N=6)
    r = throughput(core, idx, depths, slots=2, repeat=2)
    assert r["oracle_speedup"] == pytest.approx(4 / depths.mean())
    assert r["continuous"]["row_loops"] == depths.sum() and r["max_depth"]["row_loops"] == 6 * 4
    assert r["static"]["row_loops"] <= r["max_depth"]["row_loops"]


@pytest.mark.parametrize("spec", [dict(variant="fully_looped", n_layer=1, n_loops=2), dict()])
def test_models_without_one_shared_loop_are_refused(spec):
    with pytest.raises(ValueError, match="same function"):
        DepthwiseBatcher(GPT(GPTConfig(**{**TINY, **spec})), 2)


def test_relaxed_recursive_is_refused():
    relaxed = torch_from_gpt2(TorchGPT(GPTConfig(**{**TINY, "n_layer": 4})), 2, lora_rank=2)
    with pytest.raises(ValueError, match="lora_rank"):
        DepthwiseBatcher(GPT(relaxed.config), 2)
