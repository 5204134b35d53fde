"""Graders of chapter 9 (exercises/ch09_relaxed_recursive.py): the sharing order, the shared
blocks' initialisation, the SVD-initialised LoRA, the parameter count of a relaxed model,
the expected gain of depth-wise batching. Oracles: the orders written out by hand, layers
that carry their own index (so the value says which layers went in), the Eckart-Young bound
from the singular values, the parameters of the built model (on PyTorch's meta device),
exact enumeration and Monte Carlo over the exit depths."""
import itertools
import math

import numpy as np
import pytest
import torch

from minilooped.grading.checks import assert_close, assert_equal, check
from minilooped.models import GPTConfig
from minilooped.torch.models import GPT as TorchGPT

torch.set_num_threads(1)


# ---------------------------------------------------------------- ex9_1 sharing order
@pytest.mark.ex9_1
def test_block_order_by_hand(impl):
    assert_equal(impl(2, 3, "cycle"), [0, 1, 0, 1, 0, 1], "cycle, K = 2, R = 3",
                 hint="CYCLE repeats the whole stack of K blocks: |0 1|0 1|0 1|")
    assert_equal(impl(2, 3, "sequence"), [0, 0, 0, 1, 1, 1], "sequence, K = 2, R = 3",
                 hint="SEQUENCE applies each block R times in a row: |0 0 0|1 1 1|")
    assert_equal(impl(1, 4, "cycle"), [0, 0, 0, 0], "one block looped 4 times")
    assert_equal(impl(4, 1, "sequence"), [0, 1, 2, 3], "no loop at all: the original order")


@pytest.mark.ex9_1
def test_block_order_every_block_serves_R_depths(impl):
    for K, R in itertools.product((1, 2, 3, 4), (1, 2, 3, 5)):
        for sharing in ("cycle", "sequence"):
            order = list(impl(K, R, sharing))
            check(len(order) == K * R, f"{sharing}, K = {K}, R = {R}: {len(order)} depths, expected K R = {K * R}")
            check(all(order.count(i) == R for i in range(K)),
                  f"{sharing}, K = {K}, R = {R}: every block must serve exactly R depths, got {order}")


# ---------------------------------------------------------------- ex9_2 initialisation
def _layers(N, shape=(3, 2)):
    # layer d holds d everywhere, plus a pattern so that shapes and positions matter
    base = np.arange(np.prod(shape), dtype=np.float64).reshape(shape) / 100
    return [np.full(shape, float(d)) + base for d in range(N)]


def _which(blocks, shape=(3, 2)):
    base = np.arange(np.prod(shape), dtype=np.float64).reshape(shape) / 100
    return [float(np.mean(np.asarray(b) - base)) for b in blocks]


@pytest.mark.ex9_2
def test_stepwise_and_lower(impl):
    for N, K, expected in ((4, 2, [0, 3]), (6, 3, [0, 3, 5]), (6, 2, [0, 5]), (4, 1, [0]), (4, 4, [0, 1, 2, 3]),
                           (12, 4, [0, 4, 7, 11]), (10, 5, [0, 2, 5, 7, 9])):
        got = impl(_layers(N), K, "stepwise")
        check(isinstance(got, (list, tuple)) and len(got) == K, f"stepwise, N = {N}, K = {K}: return a list of K arrays")
        assert_close(np.array(_which(got)), np.array(expected, dtype=float), f"stepwise, N = {N}, K = {K}: source layers",
                     hint="evenly spaced from layer 0 to layer N - 1, rounded, a tie going to the later layer "
                          "(N = 10, K = 5: 4.5 -> 5)")
        low = impl(_layers(N), K, "lower", "sequence")
        assert_close(np.array(_which(low)), np.arange(K, dtype=float), f"lower, N = {N}, K = {K}: source layers",
                     hint="Lower takes the first K layers, whatever the sharing")


@pytest.mark.ex9_2
def test_average_follows_the_sharing(impl):
    # N = 6, K = 2: cycle ties depths {0, 2, 4} and {1, 3, 5}; sequence {0, 1, 2} and {3, 4, 5}
    for sharing, expected in (("cycle", [2.0, 3.0]), ("sequence", [1.0, 4.0])):
        got = impl(_layers(6), 2, "average", sharing)
        check(isinstance(got, (list, tuple)) and len(got) == 2, f"average, {sharing}: return a list of K arrays")
        assert_close(np.array(_which(got)), np.array(expected), f"average, {sharing}, N = 6, K = 2: mean layer index",
                     hint="block i is the mean of the layers it replaces: the depths d with order[d] == i")
        check(np.asarray(got[0]).shape == (3, 2), f"average, {sharing}: the blocks keep the layers' shape")
    rng = np.random.default_rng(0)
    layers = [rng.standard_normal((5, 4)) for _ in range(8)]
    got = impl(layers, 4, "average", "cycle")
    assert_close(got[1], (layers[1] + layers[5]) / 2, "average, cycle, N = 8, K = 4: block 1 = mean of layers 1 and 5")
    assert_close(impl(layers, 1, "average"), [np.mean(layers, axis=0)], "average, K = 1: the mean of all layers")


@pytest.mark.ex9_2
def test_initialisation_errors(impl):
    for args in ((_layers(6), 4, "stepwise"), (_layers(4), 2, "median")):
        with pytest.raises(ValueError):
            impl(*args)


# ---------------------------------------------------------------- ex9_3 SVD LoRA
def _residual(out, inn, seed):
    rng = np.random.default_rng(seed)
    # decaying singular values, all distinct: the best rank-r approximation is unique
    U, _ = np.linalg.qr(rng.standard_normal((out, out)))
    V, _ = np.linalg.qr(rng.standard_normal((inn, inn)))
    k = min(out, inn)
    s = np.sort(rng.uniform(0.5, 1.0, k) * 0.8 ** np.arange(k))[::-1]
    return (U[:, :k] * s) @ V[:, :k].T, s


@pytest.mark.ex9_3
def test_lora_shapes_and_the_eckart_young_error(impl):
    for out, inn, seed in ((48, 16, 0), (16, 40, 1), (24, 24, 2)):
        R, s = _residual(out, inn, seed)
        for r in (0, 1, 3, min(out, inn)):
            got = impl(R, r)
            check(isinstance(got, tuple) and len(got) == 2, "return the pair (A, B)")
            A, B = (np.asarray(x, dtype=np.float64) for x in got)
            check(A.shape == (r, inn) and B.shape == (out, r),
                  f"residual {R.shape}, rank {r}: got A {A.shape} and B {B.shape}, expected A ({r}, {inn}) "
                  f"and B ({out}, {r})")
            err = np.linalg.norm(R - B @ A)
            best = math.sqrt(float(np.sum(s[r:] ** 2)))
            assert_close(np.array(err), np.array(best), f"||residual - B A||_F at rank {r} (shape {R.shape})",
                         hint="no rank-r matrix can be closer than the singular values it leaves out allow; "
                              "which rank-r matrix reaches that bound?", rtol=1e-6, atol=1e-9)


@pytest.mark.ex9_3
def test_lora_product_and_orthonormal_A(impl):
    R, s = _residual(32, 20, 3)
    U, S, Vh = np.linalg.svd(R, full_matrices=False)
    for r in (2, 5):
        A, B = (np.asarray(x, dtype=np.float64) for x in impl(R, r))
        assert_close(B @ A, (U[:, :r] * S[:r]) @ Vh[:r], f"B A at rank {r}", rtol=1e-6, atol=1e-9)
        assert_close(A @ A.T, np.eye(r), f"A A^T at rank {r}", rtol=1e-6, atol=1e-9,
                     hint="A's rows are orthonormal; the singular values go into B")


@pytest.mark.ex9_3
def test_lora_beats_other_rank_r_corrections(impl):
    R, _ = _residual(30, 30, 4)
    r = 4
    A, B = (np.asarray(x, dtype=np.float64) for x in impl(R, r))
    ours = np.linalg.norm(R - B @ A)
    Q, _ = np.linalg.qr(R[:, :r])  # project onto the first r columns' span
    check(ours <= np.linalg.norm(R - Q @ (Q.T @ R)) + 1e-9, "a projection onto r columns of the residual beats your B A")
    rng = np.random.default_rng(5)
    for _ in range(20):
        P, _ = np.linalg.qr(rng.standard_normal((30, r)))
        check(ours <= np.linalg.norm(R - P @ (P.T @ R)) + 1e-9, "a random rank-r projection beats your B A")
    for bad in (-1, 31):
        with pytest.raises(ValueError):
            impl(R, bad)


# ---------------------------------------------------------------- ex9_4 parameter count
def _built(config):
    with torch.device("meta"):  # shapes only
        model = TorchGPT(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.ex9_4
def test_param_count_of_built_models(impl):
    for bias, vectors, (K, R, r) in itertools.product((True, False), (True, False),
                                                      ((2, 2, 0), (2, 2, 8), (1, 4, 32), (4, 1, 4), (3, 2, 5))):
        config = GPTConfig(block_size=64, vocab_size=65, n_embd=32, n_head=4, bias=bias, variant="recursive",
                           n_layer=K, n_loops=R, lora_rank=r, relax_vectors=vectors)
        got = impl(config)
        check(isinstance(got, (int, np.integer)), f"return an int, got {type(got).__name__}")
        assert_equal(int(got), _built(config),
                     f"parameters of K = {K}, R = {R}, rank {r}, bias={bias}, relax_vectors={vectors}",
                     hint="the shared part is a GPT-2 of K blocks; then one relaxation per depth (K R of them), "
                          "r (in + out) per LoRA'd matrix")


@pytest.mark.ex9_4
def test_param_count_gemma_like_scale(impl):
    # a wide model: the count must be exact, not just close
    config = GPTConfig(block_size=1024, vocab_size=50257, n_embd=768, n_head=12, variant="recursive",
                       n_layer=6, n_loops=2, lora_rank=64)
    assert_equal(int(impl(config)), _built(config), "parameters of a 6 x 2 relaxed GPT-2 small, rank 64")


# ---------------------------------------------------------------- ex9_5 depth-wise batching
KEYS = ("max_depth", "static", "continuous", "static_vs_max_depth", "continuous_vs_max_depth", "continuous_vs_static")


def _exact(p, B):
    # every combination of B depths, with its probability
    R = len(p)
    e_max = sum(np.prod([p[d] for d in ds]) * (max(ds) + 1) for ds in itertools.product(range(R), repeat=B))
    mean = sum((t + 1) * p[t] for t in range(R))
    return {"max_depth": R, "static": e_max, "continuous": mean, "static_vs_max_depth": R / e_max,
            "continuous_vs_max_depth": R / mean, "continuous_vs_static": e_max / mean}


@pytest.mark.ex9_5
def test_expected_speedup_exact(impl):
    for p, B in (([0.5, 0.5], 2), ([0.2, 0.3, 0.5], 3), ([0.7, 0.1, 0.1, 0.1], 4), ([0.25] * 4, 1),
                 ([0.0, 1.0, 0.0], 5)):
        got = impl(p, B)
        check(isinstance(got, dict) and all(k in got for k in KEYS), f"return a dict with the keys {KEYS}")
        expected = _exact(p, B)
        for k in KEYS:
            assert_close(np.array(float(got[k])), np.array(expected[k]), f"{k} for exits {p}, batch {B}",
                         hint="a static group costs its deepest request's depth for every row; "
                              "P(max <= t) of independent depths is a product", rtol=1e-9, atol=1e-12)


@pytest.mark.ex9_5
def test_expected_speedup_monte_carlo_and_limits(impl):
    rng = np.random.default_rng(0)
    p = np.array([0.45, 0.25, 0.15, 0.1, 0.05])
    for B in (8, 32):
        d = rng.choice(len(p), size=(100_000, B), p=p) + 1
        got = impl(list(p), B)
        assert_close(np.array(float(got["static"])), np.array(d.max(axis=1).mean()), f"static cost, batch {B}",
                     rtol=5e-3)
        assert_close(np.array(float(got["continuous"])), np.array(d.mean()), "continuous cost", rtol=5e-3)
    big = impl([0.9, 0.05, 0.05], 512)
    check(abs(big["static"] - 3) < 1e-6, "with a batch of 512 some request almost surely needs all 3 loops: "
                                         f"static should cost ~3, got {big['static']}")
    for bad in (([0.5, 0.6], 4), ([1.0], 0), ([-0.5, 1.5], 2)):
        with pytest.raises(ValueError):
            impl(*bad)
