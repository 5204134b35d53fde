"""Graders of chapter 2 (exercises/ch02_building_blocks.py): embedding and RMSNorm
backward kernels, a stable log-softmax, AdamW's step, the warmup + cosine schedule, GELU's
derivative.
Oracles: PyTorch in float64, finite differences, the library, and properties."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import minilooped as ml
import minilooped.functional as F
import minilooped.ops.elementwise
import minilooped.ops.fused
from minilooped.ops import fast
from minilooped.grading.checks import assert_close, check, check_gradients, grader_settings
from minilooped.optim.lr_schedule import warmup_cosine as reference_warmup_cosine


def _rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------- ex2_1 embedding backward
def _torch_embedding_grad(idx, g, v):
    w = torch.zeros(v, g.shape[-1], dtype=torch.float64, requires_grad=True)
    torch.nn.functional.embedding(torch.tensor(idx), w).backward(torch.tensor(g))
    return w.grad


_SCATTER_HINT = "add every g[pos] into row idx[pos]; repeated ids must accumulate (np.add.at), not overwrite"


@pytest.mark.ex2_1
def test_embedding_backward_repeated_ids(impl):
    idx = np.array([[1, 1, 4], [0, 1, 4]])
    g = _rng().standard_normal((2, 3, 5))
    assert_close(impl(g, idx, 6), _torch_embedding_grad(idx, g, 6), "dL/dweight for ids [[1, 1, 4], [0, 1, 4]]",
                 hint=_SCATTER_HINT)


@pytest.mark.ex2_1
@grader_settings(30)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.integers(1, 7), st.integers(0, 2**31))
def test_embedding_backward_random_ids(impl, idx_shape, vocab, seed):
    r = _rng(seed)
    idx = r.integers(0, vocab, size=tuple(idx_shape))
    g = r.standard_normal(tuple(idx_shape) + (3,))
    assert_close(impl(g, idx, vocab), _torch_embedding_grad(idx, g, vocab),
                 f"dL/dweight for idx of shape {idx.shape}, {vocab} rows", hint=_SCATTER_HINT)


@pytest.mark.ex2_1
def test_embedding_backward_keeps_dtype(impl):
    got = impl(np.ones((2, 4), dtype=np.float32), np.array([0, 2]), 3)
    check(getattr(got, "dtype", None) == np.float32,
          f"dL/dweight: got dtype {getattr(got, 'dtype', type(got).__name__)}, expected float32 like g",
          hint="create the zeros with dtype=g.dtype")


@pytest.mark.ex2_1
def test_embedding_backward_inside_the_engine(impl, monkeypatch):
    monkeypatch.setattr(minilooped.ops.fused, "embedding_backward", impl)
    idx = np.array([[0, 2, 2], [3, 0, 2]])
    check_gradients(lambda w: F.embedding(idx, w), [_rng().standard_normal((4, 3))],
                    "F.embedding using your embedding_backward")


# ------------------------------------------------------------ ex2_2 RMSNorm backward
def _rms_inputs(shape, k, affine=True, seed=0):
    """Inputs of rms_norm_backward for x of ``shape`` normalised over its last k dims."""
    r = _rng(seed)
    x = r.standard_normal(shape) * 3 + 1
    nshape = shape[len(shape) - k:]
    w = 1 + 0.5 * r.standard_normal(nshape) if affine else None
    g = r.standard_normal(shape)
    axes = tuple(range(len(shape) - k, len(shape)))
    rstd = 1 / np.sqrt((x * x).mean(axis=axes, keepdims=True) + 1e-5)
    return x, (g, x * rstd, rstd, w, axes)


def _rms_torch(x, g, w, nshape):
    """torch's (dx, dweight) for the same forward."""
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w if w is not None else np.ones(nshape), requires_grad=True)
    torch.nn.functional.rms_norm(tx, nshape, tw, eps=1e-5).backward(torch.tensor(g))
    return tx.grad, tw.grad


def _rms_check(impl, shape, k, affine=True, seed=0):
    x, args = _rms_inputs(shape, k, affine, seed)
    got = impl(*args)
    dx, dw = _rms_torch(x, args[0], args[3], shape[len(shape) - k:])
    what = f"x {shape} normalised over axes {args[4]}{'' if affine else ', weight None'}:"
    check(isinstance(got, tuple) and len(got) == 2, f"{what} return a tuple (dx, dweight), "
          f"got {type(got).__name__}{' of ' + str(len(got)) if isinstance(got, tuple) else ''}")
    assert_close(got[1], dw, f"{what} dweight", hint="y = xhat * weight: each weight entry is used once per "
                 "position of the other axes")
    assert_close(got[0], dx, f"{what} dx", hint="one x_i moves rstd, hence every xhat_j of its row: a term "
                 "g_i * weight_i * rstd plus a correction through the mean of x^2 (there is no mean of x here)")


@pytest.mark.ex2_2
def test_rms_norm_backward_matches_torch(impl):
    _rms_check(impl, (2, 3, 8), 1)


@pytest.mark.ex2_2
def test_rms_norm_backward_without_weight(impl):
    _rms_check(impl, (4, 6), 1, affine=False)


@pytest.mark.ex2_2
def test_rms_norm_backward_two_normalised_dims(impl):
    _rms_check(impl, (3, 4, 5), 2)


@pytest.mark.ex2_2
@grader_settings(20)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=2), st.integers(2, 6), st.booleans(), st.integers(0, 999))
def test_rms_norm_backward_random_shapes(impl, lead, c, affine, seed):
    _rms_check(impl, tuple(lead) + (c,), 1, affine, seed)


@pytest.mark.ex2_2
@grader_settings(10)
@given(st.lists(st.integers(1, 3), min_size=0, max_size=2), st.integers(2, 5), st.integers(0, 999))
def test_rms_norm_backward_finite_differences(impl, lead, c, seed):
    # the library's rms_norm op with your backward, against finite differences
    original = minilooped.ops.fused.rms_norm_backward
    minilooped.ops.fused.rms_norm_backward = impl
    try:
        r = _rng(seed)
        check_gradients(lambda x, w: F.rms_norm(x, (c,), w, eps=1e-5),
                        [r.standard_normal(tuple(lead) + (c,)), r.standard_normal(c)],
                        f"F.rms_norm over the last dim of x {tuple(lead) + (c,)} using your rms_norm_backward")
    finally:
        minilooped.ops.fused.rms_norm_backward = original


# ------------------------------------------------------------- ex2_3 log-softmax
def _log_softmax_check(impl, x, dim, what, rtol=1e-6):
    t = ml.Tensor(x, requires_grad=True)
    out = impl(t, dim)
    check(isinstance(out, ml.Tensor), f"{what}: return a Tensor, got {type(out).__name__}",
          hint="build the result from Tensor operations, so autograd can differentiate it")
    tx = torch.tensor(x, requires_grad=True)
    expected = torch.log_softmax(tx, dim)
    assert_close(out, expected, f"{what} value", rtol=rtol, atol=1e-6,
                 hint="log softmax(a) does not change when one constant is subtracted from a whole slice "
                 "along dim: which constant keeps exp from overflowing?")
    g = _rng(7).standard_normal(x.shape).astype(x.dtype)
    out.backward(g)
    expected.backward(torch.tensor(g))
    assert_close(t.grad, tx.grad, f"{what} gradient", rtol=rtol, atol=1e-6,
                 hint="use Tensor ops only (no .data, no NumPy) so the graph is recorded")


@pytest.mark.ex2_3
def test_log_softmax_matches_torch(impl):
    _log_softmax_check(impl, _rng().standard_normal((4, 7)), -1, "log_softmax of (4, 7), dim=-1")


@pytest.mark.ex2_3
def test_log_softmax_other_dims(impl):
    x = _rng().standard_normal((2, 3, 4))
    _log_softmax_check(impl, x, 0, "log_softmax of (2, 3, 4), dim=0")
    _log_softmax_check(impl, x, 1, "log_softmax of (2, 3, 4), dim=1")


@pytest.mark.ex2_3
def test_log_softmax_huge_logits_do_not_overflow(impl):
    x = np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4 + 1, -1e4 + 2], [88.0, 89.0, 90.0]], dtype=np.float32)
    out = impl(ml.Tensor(x, requires_grad=True), -1)
    vals = out.numpy() if isinstance(out, ml.Tensor) else np.asarray(out)
    check(np.all(np.isfinite(vals)),
          f"log_softmax of float32 logits up to 1e4: got {vals.tolist()}, which contains inf or nan",
          hint="exp(1000) overflows: subtract the maximum along dim before exp")
    _log_softmax_check(impl, x, -1, "log_softmax of huge float32 logits", rtol=1e-5)


@pytest.mark.ex2_3
def test_log_softmax_gradient_check(impl):
    check_gradients(lambda x: impl(x, -1), [_rng().standard_normal((3, 5))], "log_softmax",
                    hint="use Tensor ops only, so that autograd records every step")


# ------------------------------------------------------------------ ex2_4 AdamW
def _groups(weight, bias, other):
    """nanoGPT's grouping: decay on the weight (and a parameter left without gradient), none on the bias."""
    return [{"params": [weight, other], "weight_decay": 0.1}, {"params": [bias], "weight_decay": 0.0}]


def _adamw_run(impl, steps=6, change_lr_at=3):
    """Two parameter groups (decayed 2-D weight, undecayed bias), a parameter without
    gradient, an lr changed mid-run: yours against torch.optim.AdamW, step by step."""
    r = _rng()
    w0, b0, c0 = r.standard_normal((3, 4)), r.standard_normal(4), r.standard_normal(2)
    grads = [(r.standard_normal((3, 4)), r.standard_normal(4)) for _ in range(steps)]
    w, b, c = (ml.nn.Parameter(ml.Tensor(a.copy())) for a in (w0, b0, c0))
    tw, tb, tc = (torch.tensor(a.copy(), requires_grad=True) for a in (w0, b0, c0))
    opt = impl(_groups(w, b, c), lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    topt = torch.optim.AdamW(_groups(tw, tb, tc), lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    for t, (gw, gb) in enumerate(grads):
        if t == change_lr_at:
            for gr in opt.param_groups + topt.param_groups:
                gr["lr"] = 3e-3
        w.grad, b.grad, c.grad = gw.copy(), gb.copy(), None
        tw.grad, tb.grad, tc.grad = torch.tensor(gw), torch.tensor(gb), None
        opt.step()
        topt.step()
        hint = ("p *= 1 - lr*wd; m, v updated in place; p -= lr/(1-beta1^t) * m / (sqrt(v)/sqrt(1-beta2^t) + eps)"
                + ("; read lr from the group at every step" if t >= change_lr_at else ""))
        assert_close(w, tw, f"weight (weight_decay 0.1) after step {t + 1}", hint=hint, rtol=1e-9)
        assert_close(b, tb, f"bias (weight_decay 0.0) after step {t + 1}", hint=hint, rtol=1e-9)
        assert_close(c, tc, f"a parameter whose .grad is None, after step {t + 1}",
                     hint="skip parameters with p.grad None: no decay, no update")
    return opt, topt, (w, b, c), (tw, tb, tc)


@pytest.mark.ex2_4
def test_adamw_matches_torch(impl):
    _adamw_run(impl)


@pytest.mark.ex2_4
def test_adamw_state(impl):
    opt, topt, (w, b, c), (tw, tb, tc) = _adamw_run(impl, steps=2, change_lr_at=99)
    check(id(c) not in opt.state, "a parameter that never had a gradient has optimiser state",
          hint="create the state at a parameter's first update")
    for p, tp, name in ((w, tw, "weight"), (b, tb, "bias")):
        state = opt.state.get(id(p))
        check(isinstance(state, dict) and {"step", "exp_avg", "exp_avg_sq"} <= set(state),
              f"self.state[id({name})] must be a dict with 'step', 'exp_avg', 'exp_avg_sq', got "
              f"{sorted(state) if isinstance(state, dict) else state!r}",
              hint="the checkpoint code (state_dict) reads these keys")
        check(float(state["step"]) == 2.0, f"state['step'] of {name} is {state['step']}, expected 2 after 2 steps")
        assert_close(state["exp_avg"], topt.state[tp]["exp_avg"], f"exp_avg of {name}", rtol=1e-9)
        assert_close(state["exp_avg_sq"], topt.state[tp]["exp_avg_sq"], f"exp_avg_sq of {name}", rtol=1e-9)


@pytest.mark.ex2_4
def test_adamw_trains_a_linear_layer(impl):
    ml.manual_seed(0)
    layer = ml.nn.Linear(4, 1)
    x = ml.Tensor(_rng().standard_normal((32, 4)).astype(np.float32))
    y = x @ ml.Tensor(np.array([[1.0], [-2.0], [0.5], [3.0]], dtype=np.float32))
    opt = impl(layer.parameters(), lr=0.05, weight_decay=0.0)
    first = None
    for _ in range(100):
        loss = ((layer(x) - y) ** 2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    check(loss.item() < 0.05 * first, f"100 AdamW steps on linear regression took the loss from {first:.4g} "
          f"to {loss.item():.4g}, expected below {0.05 * first:.4g}")


# --------------------------------------------------------- ex2_5 warmup + cosine
_CONFIGS = [(6e-4, 6e-5, 10, 100), (1.0, 0.0, 0, 20), (3e-4, 3e-4, 5, 5), (1e-3, 1e-4, 3, 4)]


@pytest.mark.ex2_5
@pytest.mark.parametrize("config", _CONFIGS, ids=lambda c: "max{}_min{}_warm{}_steps{}".format(*c))
def test_warmup_cosine_every_step(impl, config):
    max_lr, min_lr, warmup, total = config
    for step in range(total + 5):
        got = impl(step, max_lr, min_lr, warmup, total)
        expected = reference_warmup_cosine(step, max_lr, min_lr, warmup, total)
        phase = "warmup" if step < warmup else ("after max_steps" if step >= total else "cosine decay")
        check(isinstance(got, (float, int)) and math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-15),
              f"lr at step {step} ({phase}; max_lr={max_lr}, min_lr={min_lr}, warmup_steps={warmup}, "
              f"max_steps={total}): expected {expected!r}, got {got!r}",
              hint={"warmup": "max_lr * (step + 1) / (warmup_steps + 1)",
                    "after max_steps": "return min_lr from max_steps on",
                    "cosine decay": "r = (step - warmup_steps) / max(1, max_steps - warmup_steps); "
                                    "min_lr + 0.5 * (1 + cos(pi r)) * (max_lr - min_lr)"}[phase])


@pytest.mark.ex2_5
@grader_settings(40)
@given(st.floats(1e-5, 1.0), st.floats(0.0, 1.0), st.integers(0, 50), st.integers(0, 200))
def test_warmup_cosine_properties(impl, max_lr, frac, warmup, decay):
    min_lr, total = max_lr * frac, warmup + decay
    lrs = [impl(s, max_lr, min_lr, warmup, total) for s in range(total + 3)]
    for s in range(1, warmup):
        check(lrs[s] > lrs[s - 1], f"warmup must increase the lr: step {s - 1} -> {s} gives {lrs[s - 1]} -> {lrs[s]}")
    for s in range(warmup + 1, total + 3):
        check(lrs[s] <= lrs[s - 1] + 1e-15, f"after warmup the lr must not increase: step {s - 1} -> {s} gives "
              f"{lrs[s - 1]} -> {lrs[s]} (warmup_steps={warmup}, max_steps={total})")
    check(all(v <= max_lr * (1 + 1e-12) for v in lrs), f"the lr must never exceed max_lr={max_lr}, got {max(lrs)}")
    check(all(v >= min_lr * (1 - 1e-12) for v in lrs[warmup:]),
          f"after warmup the lr must stay at or above min_lr={min_lr}, got {min(lrs[warmup:])}")
    check(math.isclose(lrs[total], min_lr, rel_tol=1e-9, abs_tol=1e-15), f"at step max_steps={total} the lr "
          f"must be min_lr={min_lr}, got {lrs[total]}")


# ------------------------------------------------------------- ex2_6 GELU backward
def _gelu_torch_grad(x, g):
    tx = torch.tensor(x, requires_grad=True)
    torch.nn.functional.gelu(tx, approximate="tanh").backward(torch.tensor(g))
    return tx.grad


_GELU_HINT = ("the tanh form is 0.5 x (1 + tanh(u)) with u a cubic in x: the product rule, then the chain rule "
              "through tanh and u")


@pytest.mark.ex2_6
def test_gelu_backward_matches_torch(impl):
    x = np.linspace(-6, 6, 49)
    g = _rng().standard_normal(x.shape)
    assert_close(impl(g, x), _gelu_torch_grad(x, g), "dL/dx on [-6, 6]", hint=_GELU_HINT)


@pytest.mark.ex2_6
@grader_settings(20)
@given(st.lists(st.integers(1, 4), min_size=0, max_size=3), st.integers(0, 999))
def test_gelu_backward_random_shapes(impl, shape, seed):
    r = _rng(seed)
    x, g = r.standard_normal(tuple(shape)) * 3, r.standard_normal(tuple(shape))
    assert_close(impl(g, x), _gelu_torch_grad(x, g), f"dL/dx for x of shape {tuple(shape)}", hint=_GELU_HINT)


@pytest.mark.ex2_6
def test_gelu_backward_keeps_float32(impl):
    x = _rng().standard_normal(6).astype(np.float32)
    got = impl(np.ones(6, dtype=np.float32), x)
    check(getattr(got, "dtype", None) == np.float32,
          f"dL/dx: got dtype {getattr(got, 'dtype', type(got).__name__)}, expected float32 for float32 inputs",
          hint="multiply by Python floats (math.sqrt(2 / math.pi)), which keep the array's dtype")


@pytest.mark.ex2_6
def test_gelu_backward_inside_the_engine(impl, monkeypatch):
    # the plain gelu op calls gelu_backward (the fast path of ops/fast.py has its own kernel)
    monkeypatch.setattr(minilooped.ops.elementwise, "gelu_backward", impl)
    with fast.disabled():
        check_gradients(lambda x: F.gelu(x), [_rng().standard_normal((3, 4)) * 2],
                        "F.gelu using your gelu_backward", hint=_GELU_HINT)
