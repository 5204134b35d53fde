"""Graders of chapter 7 (exercises/ch07_fully_looped.py): parameter-free RMSNorm's
gradient, attention injection, the gradient's shrink factor per loop, subnormal numbers.
Oracles: PyTorch autograd in float64 and finite differences; the PyTorch mirror's
attention with the same weights and the identity xq = x; geometric series whose ratio
is known; IEEE 754's limits counted from np.finfo and by hand."""
import numpy as np
import pytest
import torch

import minilooped as ml
from minilooped.grading.checks import assert_close, check, check_gradients
from minilooped.models import GPTConfig
from minilooped.models.attention import CausalSelfAttention as LibraryAttention
from minilooped.torch.models.attention import CausalSelfAttention as TorchAttention

torch.set_num_threads(1)


def _rng(seed=0):
    return np.random.default_rng(seed)


# ------------------------------------------------- ex7_1 RMSNorm's gradient
def _forward(x, axes, eps):
    rstd = 1.0 / np.sqrt((x * x).mean(axis=axes, keepdims=True) + eps)
    return x * rstd, rstd


def _torch_grad(x, g, axes, eps):
    tx = torch.tensor(x, requires_grad=True)
    y = tx / torch.sqrt((tx * tx).mean(dim=axes, keepdim=True) + eps)
    y.backward(torch.tensor(g))
    return tx.grad.numpy()


@pytest.mark.ex7_1
@pytest.mark.parametrize("shape,axes", [((2, 5, 8), (-1,)), ((3, 4, 6), (2,)), ((2, 3, 4), (1, 2))])
def test_rms_norm_backward_matches_autograd(impl, shape, axes):
    r = _rng(1)
    x, g = r.standard_normal(shape) * 3.0, r.standard_normal(shape)
    eps = 1e-6
    xhat, rstd = _forward(x, axes, eps)
    got = impl(g, xhat, rstd, axes)
    assert_close(got, _torch_grad(x, g, axes, eps), f"dL/dx for x {shape}, axes {axes}",
                 hint="every x_i moves rstd, hence every xhat_j of its row: the mean over the normalised "
                      "axes must keep its dims (keepdims=True)")


@pytest.mark.ex7_1
def test_rms_norm_backward_is_orthogonal_to_x_and_scales_inversely(impl):
    r = _rng(2)
    x, g = r.standard_normal((4, 16)), r.standard_normal((4, 16))
    xhat, rstd = _forward(x, (-1,), 0.0)
    dx = impl(g, xhat, rstd, (-1,))
    assert_close((np.asarray(dx) * x).sum(axis=-1), np.zeros(4), "x . dx per row (eps = 0)", atol=1e-10,
                 hint="n(c x) = n(x): moving x along itself changes nothing, so dL/dx has no part along x")
    xhat2, rstd2 = _forward(2.0 * x, (-1,), 0.0)
    assert_close(impl(g, xhat2, rstd2, (-1,)), np.asarray(dx) / 2.0, "dL/dx for the input 2x",
                 hint="the same xhat, half the rstd: a stream twice as large gets half the gradient")


@pytest.mark.ex7_1
def test_rms_norm_backward_gradient_check(impl):
    x = _rng(3).standard_normal((2, 3, 5))

    def f(t):
        data = t.data
        rstd = 1.0 / np.sqrt((data * data).mean(axis=-1, keepdims=True) + 1e-8)
        xhat = data * rstd
        return ml.Tensor._make(xhat, (t,), lambda g: (impl(g, xhat, rstd, (-1,)),), "student_rms_norm")

    check_gradients(f, [x], "n(x) with your backward")


# ------------------------------------------------- ex7_2 attention injection
CONFIG = GPTConfig(block_size=8, vocab_size=32, n_layer=1, n_head=4, n_embd=16, dropout=0.0, bias=True)


def _twins(impl, config=CONFIG, seed=0):
    ml.manual_seed(seed)
    ref = LibraryAttention(config)
    r = _rng(seed)
    for p in ref.parameters():  # random biases too: every path is exercised
        p.data[...] = r.standard_normal(p.shape) * 0.3
    sd = {k: v.astype(np.float64) for k, v in ref.state_dict().items()}
    mine = impl(config).double()
    mine.load_state_dict(sd)
    theirs = TorchAttention(config).double()
    theirs.load_state_dict({k: torch.tensor(v) for k, v in sd.items()})
    return mine.eval(), theirs.eval()


_INJECTION_HINT = "Q = W_q xq + b_q from the first C rows of c_attn; K, V from x with the other 2C rows"


def _injection_check(impl, config, what, B=2, T=6):
    mine, theirs = _twins(impl, config)
    r = _rng(5)
    x, xq = r.standard_normal((B, T, config.n_embd)), r.standard_normal((B, T, config.n_embd))
    tx, txq = ml.Tensor(x, requires_grad=True), ml.Tensor(xq, requires_grad=True)
    px, pxq = torch.tensor(x, requires_grad=True), torch.tensor(xq, requires_grad=True)
    out = mine(tx, txq)
    check(isinstance(out, ml.Tensor), f"{what}: forward must return a Tensor, got {type(out).__name__}")
    expected = theirs(px, pxq)
    assert_close(out, expected, f"{what}: output", hint=_INJECTION_HINT)
    g = _rng(6).standard_normal(expected.shape)
    out.backward(g)
    expected.backward(torch.tensor(g))
    assert_close(txq.grad, pxq.grad, f"{what}: gradient of xq", hint="xq feeds the queries only")
    assert_close(tx.grad, px.grad, f"{what}: gradient of x", hint="x feeds the keys and values only")
    tparams = dict(theirs.named_parameters())
    for name, p in mine.named_parameters():
        assert_close(p.grad, tparams[name].grad, f"{what}: gradient of {name}",
                     hint="slice c_attn's weight and bias with Tensor indexing (w[:C], w[C:]) so autograd reaches them")


@pytest.mark.ex7_2
def test_injection_matches_the_mirror(impl):
    _injection_check(impl, CONFIG, "attention injection (n_head 4, n_embd 16)")


@pytest.mark.ex7_2
def test_injection_without_bias_and_other_heads(impl):
    for n_head in (1, 8):
        _injection_check(impl, CONFIG.replace(bias=False, n_head=n_head),
                         f"attention injection (bias=False, n_head {n_head})", B=1, T=5)


@pytest.mark.ex7_2
def test_injection_with_xq_equal_to_x_is_self_attention(impl):
    mine, _ = _twins(impl)
    x = _rng(7).standard_normal((2, 5, 16))
    assert_close(mine(ml.Tensor(x), ml.Tensor(x)), LibraryAttention.forward(mine, ml.Tensor(x)),
                 "attention with xq = x", hint="with xq = x, queries, keys and values all come from x")


@pytest.mark.ex7_2
def test_injection_queries_are_per_position_and_causal(impl):
    mine, _ = _twins(impl)
    r = _rng(8)
    x, xq = r.standard_normal((1, 6, 16)), r.standard_normal((1, 6, 16))
    base = mine(ml.Tensor(x), ml.Tensor(xq)).numpy()
    xq2 = xq.copy()
    xq2[:, 2] += 3.0
    moved = mine(ml.Tensor(x), ml.Tensor(xq2)).numpy()
    others = [0, 1, 3, 4, 5]
    assert_close(moved[:, others], base[:, others], "outputs at positions other than 2 after changing xq at "
                 "position 2", hint="position i's query comes from xq[:, i] alone")
    x2 = x.copy()
    x2[:, 4:] -= 3.0
    later = mine(ml.Tensor(x2), ml.Tensor(xq)).numpy()
    assert_close(later[:, :4], base[:, :4], "outputs at positions 0-3 after changing x at positions 4-5",
                 hint="keys and values at later positions must stay masked: is_causal=True")


# ------------------------------------------------- ex7_3 gradient shrink per loop
_SHRINK_HINT = "fit a straight line to log(grad_state) against the loop index; r = exp(slope)"


@pytest.mark.ex7_3
def test_shrink_of_geometric_series(impl):
    for r, n in ((10.0, 6), (0.5, 9), (1.0, 4), (3000.0, 12)):
        g = 1e-3 * r ** np.arange(n)
        assert_close(float(impl(list(g))), r, f"the ratio of 1e-3 * {r}^t, t = 0..{n - 1}", rtol=1e-9,
                     hint=_SHRINK_HINT)


@pytest.mark.ex7_3
def test_shrink_uses_every_loop(impl):
    g = 10.0 ** np.arange(8)
    g[3] *= 100.0  # one loop off the line; the ends stay on it
    t = np.arange(8)
    expected = float(np.exp(np.polyfit(t, np.log(g), 1)[0]))
    assert_close(float(impl(g)), expected, "the ratio of 10^t with loop 3 a hundred times larger",
                 hint="least squares over all loops, not (last / first)^(1 / (n - 1))")


@pytest.mark.ex7_3
def test_shrink_of_a_float32_measurement(impl):
    g = (1e-2 * 1e-5 ** np.arange(12)[::-1]).astype(np.float32)  # loops 0-2 underflow to 0
    assert_close(float(impl(g)), 1e5, "the ratio of 1e-2 * 1e-5^(11 - t) as float32 holds it (loops 0-2 are 0)",
                 rtol=1e-3, hint="a 0 in a float32 gradient norm is a number too small to store, not a "
                                 "measured zero: it carries no information about the ratio")


@pytest.mark.ex7_3
def test_shrink_needs_two_loops(impl):
    for g in ([0.5], [0.0, 0.0, 1.0], [float("nan"), 2.0]):
        with pytest.raises(ValueError):
            impl(g)


# ------------------------------------------------- ex7_4 subnormal numbers
@pytest.mark.ex7_4
def test_subnormal_fraction_float32(impl):
    a = np.array([0.0, 1.0, 1e-30, 1e-38, 1.1e-38, 1e-40, 1e-45, 1e-46, -1e-39, 2e-38])
    # float32: smallest normal 1.1755e-38, smallest subnormal 1.4e-45 (1e-46 rounds to 0)
    assert_close(float(impl(a, "float32")), 5 / 10, "subnormal share of [0, 1, 1e-30, 1e-38, 1.1e-38, 1e-40, "
                 "1e-45, 1e-46, -1e-39, 2e-38] in float32",
                 hint="nonzero in float32 and |x| < np.finfo('float32').smallest_normal; mind the sign, and "
                      "values too small even for a subnormal become 0")


@pytest.mark.ex7_4
def test_subnormal_fraction_other_types_and_shapes(impl):
    a = np.array([[7e-5, 6e-6], [1e-8, 1.0]])  # float16: smallest normal 6.1e-5, subnormal 6e-8
    assert_close(float(impl(a, "float16")), 1 / 4, "subnormal share of [[7e-5, 6e-6], [1e-8, 1]] in float16",
                 hint="the thresholds depend on dtype: np.finfo(dtype)")
    assert_close(float(impl(np.array([1e-30, 1e-310]), "float64")), 1 / 2, "[1e-30, 1e-310] in float64")
    assert_close(float(impl(np.zeros((0, 3)), "float32")), 0.0, "an empty array")
