"""The blocked, multi-threaded kernels (backend.for_blocks) give the same numbers as
one whole-array pass, whatever the block size and the number of threads."""
import numpy as np
import pytest

import minilooped as ml
import minilooped.functional as F
from minilooped import backend


def _run(fn, arrays):
    xs = [ml.Tensor(a, requires_grad=True) for a in arrays]
    out = fn(*xs)
    (out * ml.Tensor(np.cos(np.arange(out.numel())).reshape(out.shape))).sum().backward()
    return [out.numpy()] + [x.grad for x in xs]


CASES = {
    "gelu": (lambda x: F.gelu(x), [(5, 7, 9)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (9,), w, b), [(5, 7, 9), (9,), (9,)]),
    "attention": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), [(2, 3, 6, 4)] * 3),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("threads", ["1", "2", "3"])
@pytest.mark.parametrize("block", [1, 5, 64])
def test_blocked_equals_whole(name, threads, block, monkeypatch):
    fn, shapes = CASES[name]
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s) for s in shapes]
    whole = _run(fn, arrays)                      # small arrays: a single block
    monkeypatch.setattr(backend, "BLOCK", block)
    monkeypatch.setenv("MINILOOPED_NUM_THREADS", threads)
    blocked = _run(fn, arrays)
    for a, b in zip(whole, blocked):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


def test_for_blocks_covers_the_range_once_and_reraises(monkeypatch):
    monkeypatch.setenv("MINILOOPED_NUM_THREADS", "2")
    seen = []
    backend.for_blocks(lambda lo, hi: seen.extend(range(lo, hi)), 103, 10)
    assert sorted(seen) == list(range(103))

    def boom(lo, hi):
        if lo >= 50:
            raise RuntimeError("block failed")
    with pytest.raises(RuntimeError, match="block failed"):
        backend.for_blocks(boom, 100, 10)


def test_errstate_reaches_the_worker_threads(monkeypatch):
    monkeypatch.setattr(backend, "BLOCK", 4)
    monkeypatch.setenv("MINILOOPED_NUM_THREADS", "2")
    x = ml.Tensor(np.full((8, 16), 1e30, dtype=np.float32))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # a RuntimeWarning from any thread would fail
        with np.errstate(over="ignore", invalid="ignore"):
            F.layer_norm(x, (16,))
