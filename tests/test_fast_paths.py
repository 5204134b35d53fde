"""The core's fast paths (minilooped/ops/fast.py, book appendix A1) compute what the plain
versions compute.

Each optimisation replaced a clear formula by a quicker one; these tests hold the quick
one to the clear one (run with ``fast.disabled()``), on the cases each fast path treats
differently: every kernel of fast.py has a test here.
"""
import numpy as np
import pytest

import minilooped as ml
import minilooped.functional as F
from minilooped import backend
from minilooped.ops import fast, fused
from minilooped.ops.linalg import mm


# ---------------------------------------------------------------- each kernel against its plain op
def _fast_and_plain(fn, arrays, g=None, seed=0):
    """(output, gradients) of ``fn`` on fresh leaf tensors, with the kernels and without."""
    results = []
    for plain in (False, True):
        ml.manual_seed(seed)                               # dropout draws the same mask in both
        leaves = [ml.Tensor(a.copy(), requires_grad=True) for a in arrays]
        with fast.disabled() if plain else _nothing():
            out = fn(*leaves)
            out.backward(np.ones(out.shape, out.dtype) if g is None else g.astype(out.dtype))
        results.append((out.numpy(), [t.grad for t in leaves]))
    return results


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _assert_same(results, tol):
    (out_f, grads_f), (out_p, grads_p) = results
    np.testing.assert_allclose(out_f, out_p, rtol=tol, atol=tol)
    for gf, gp in zip(grads_f, grads_p):
        np.testing.assert_allclose(gf, gp, rtol=tol, atol=tol)


def test_disabled_runs_the_plain_ops_and_restores():
    assert fast.enabled()
    with fast.disabled():
        assert not fast.enabled()
    assert fast.enabled()


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-6)])
@pytest.mark.parametrize("size", [(3, 5), (70_000,)])   # one block, and several (backend.BLOCK)
def test_gelu_kernel_equals_plain(size, dtype, tol):
    x = (np.random.default_rng(0).standard_normal(size) * 4).astype(dtype)
    g = np.random.default_rng(1).standard_normal(size)
    _assert_same(_fast_and_plain(F.gelu, [x], g), tol)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 8), (300, 256)])  # one block of rows, and several
def test_layer_norm_rows_kernel_equals_plain(shape, affine):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape) * 3 + 1
    c = shape[-1]
    params = [1 + 0.5 * rng.standard_normal(c), rng.standard_normal(c)] if affine else []
    fn = (lambda x, w, b: F.layer_norm(x, (c,), w, b)) if affine else (lambda x: F.layer_norm(x, (c,)))
    _assert_same(_fast_and_plain(fn, [x] + params, rng.standard_normal(shape)), 1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("logits", ["usual", "large", "one row far below", "inf"])
def test_cross_entropy_kernel_equals_plain(logits, reduction):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((6, 9)) * 2
    if logits == "large":
        x += 500.0                                     # the kernel's shift m is the largest logit
    elif logits == "one row far below":
        x[2] -= 2000.0                                 # that row's sum underflows: redone exactly
    elif logits == "inf":
        x[3, 4] = np.inf
    targets = rng.integers(0, 9, size=6)
    targets[1] = -100                                  # ignored
    g = None if reduction != "none" else rng.standard_normal(6)
    with np.errstate(invalid="ignore"):
        (out_f, (gf,)), (out_p, (gp,)) = _fast_and_plain(
            lambda t: F.cross_entropy(t, targets, reduction=reduction), [x], g)
    np.testing.assert_allclose(out_f, out_p, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gf, gp, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("copy_k", [True, False], ids=["row-major scaled k^T", "view k^T, scaled q"])
@pytest.mark.parametrize("case", ["causal", "full", "bool mask", "float mask", "causal L < S", "dropout",
                                  "broadcast k, v"])
def test_attention_kernel_equals_plain(case, copy_k, monkeypatch):
    monkeypatch.setattr(fast, "NT_COPY_MAX", 10 ** 9 if copy_k else 0)
    rng = np.random.default_rng(7)
    L, S = (4, 6) if case == "causal L < S" else (6, 6)
    q = rng.standard_normal((2, 3, L, 4))
    k, v = rng.standard_normal((2, 3, S, 4)), rng.standard_normal((2, 3, S, 5))
    if case == "broadcast k, v":
        k, v = k[:1], v[:1]
    kwargs = dict(is_causal=case in ("causal", "causal L < S", "dropout", "broadcast k, v"))
    if case == "bool mask":
        kwargs["attn_mask"] = rng.random((L, S)) < 0.7
        kwargs["attn_mask"][:, 0] = True               # no row fully masked
    elif case == "float mask":
        kwargs["attn_mask"] = rng.standard_normal((L, S))
    elif case == "dropout":
        kwargs["dropout_p"] = 0.3
    g = rng.standard_normal((2, 3, L, 5))
    _assert_same(_fast_and_plain(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **kwargs), [q, k, v], g),
                 1e-12)


def test_plain_attention_fully_masked_row_is_nan_like_torch():
    q = k = v = ml.Tensor(np.ones((1, 3, 2)))
    mask = np.ones((3, 3), dtype=bool)
    mask[1] = False
    with fast.disabled(), np.errstate(invalid="ignore"):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).numpy()
    assert np.isnan(out[0, 1]).all() and np.isfinite(out[0, [0, 2]]).all()


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("layout", ["small", "several blocks", "transposed"])
def test_adamw_kernel_equals_plain(layout, amsgrad):
    from minilooped.optim.adamw import adamw_update

    shape = {"small": (7, 3), "several blocks": (300, 500), "transposed": (40, 30)}[layout]
    p0 = np.random.default_rng(8).standard_normal(shape)
    runs = []
    for update in (fast.adamw_update, adamw_update):
        p, m, v = p0.copy(), np.zeros(shape), np.zeros(shape)
        vmax = np.zeros(shape) if amsgrad else None
        if layout == "transposed":                     # not contiguous: the kernel's other way
            p, m, v, vmax = p.T, m.T, v.T, None if vmax is None else vmax.T
        grads = np.random.default_rng(9)
        for t in range(1, 6):
            update(p, grads.standard_normal(p.shape), m, v, vmax, 1e-2, 0.9, 0.95, 1e-8, 0.1, t)
        runs.append((p, m, v))
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- embedding backward
def _add_at(g, idx, v):
    gw = np.zeros((v, g.shape[-1]), dtype=g.dtype)
    np.add.at(gw, idx.reshape(-1), g.reshape(-1, g.shape[-1]))
    return gw


@pytest.mark.parametrize("vocab", [7, fast.ONE_HOT_MAX_VOCAB, fast.ONE_HOT_MAX_VOCAB + 1, 3000])
def test_embedding_backward_equals_add_at(vocab):
    rng = np.random.default_rng(vocab)
    idx = rng.integers(0, min(vocab, 50), size=(4, 33))  # repeated ids, and ids that never occur
    idx[0, :5] = vocab - 1
    g = rng.standard_normal((4, 33, 6))
    np.testing.assert_allclose(fast.embedding_backward(g, idx, vocab), _add_at(g, idx, vocab), rtol=1e-12, atol=1e-12)
    with fast.disabled():                                  # the plain version is add.at itself
        assert np.array_equal(fused.embedding_backward(g, idx, vocab), _add_at(g, idx, vocab))


@pytest.mark.parametrize("vocab", [5, 1000])
def test_embedding_backward_of_no_ids_is_zero(vocab):
    g = np.zeros((0, 3))
    out = fast.embedding_backward(g, np.zeros(0, dtype=np.int64), vocab)
    assert out.shape == (vocab, 3) and not out.any()


# ---------------------------------------------------------------- attention's shift
def _reference_attention(q, k, v, causal):
    s = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
    if causal:
        s = np.where(np.triu(np.ones(s.shape[-2:], dtype=bool), 1), -np.inf, s)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return (p / p.sum(axis=-1, keepdims=True)) @ v


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("spread", [1.0, 300.0])
def test_attention_shift_and_exact_fallback(spread, causal, monkeypatch):
    """spread 300: rows whose scores lie hundreds apart, so that exp(s - m) overflows (the
    causal diagonal shift) or underflows (the matrix shift) in float32, and the exact per-row
    shift must take over. spread 1: the fast shift alone."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, 6, 4)) for _ in range(3))
    k[0, 1] = np.abs(k[0, 1])
    q[0, 1, 2] = -np.abs(q[0, 1, 2]) * spread      # row 2 of matrix (0, 1): large negative scores
    q[0, 1, 3] = np.abs(q[0, 1, 3]) * spread ** 0.5  # another row of it: large positive ones
    k[0, 1, 1] *= spread                             # one key far above the others
    used = []
    original = fast._exact_rows

    def spy(e, r, bad, *args):
        used.append(int(bad.sum()))
        return original(e, r, bad, *args)
    monkeypatch.setattr(fast, "_exact_rows", spy)
    for dtype in (np.float64, np.float32):
        used.clear()
        out = F.scaled_dot_product_attention(*(ml.Tensor(a.astype(dtype)) for a in (q, k, v)), is_causal=causal)
        ref = _reference_attention(q, k, v, causal=causal)
        tol = 1e-12 if dtype == np.float64 else 2e-5
        np.testing.assert_allclose(out.numpy(), ref, rtol=tol, atol=tol)
        assert np.isfinite(out.numpy()).all()
        if spread == 1.0:
            assert not used                            # the fast shift alone
        elif dtype == np.float32:
            assert used and used[0] < q.shape[0] * q.shape[1] * q.shape[2]  # a few rows, exactly


def test_attention_row_sum_near_overflow_takes_the_exact_shift():
    """A score 85 above the diagonal: exp(85) = 8e36 is a finite row sum in float32, but
    e @ v with |v| ~ 100 is not. The row must take the exact shift, and its output be finite."""
    q = np.zeros((1, 1, 3, 2), dtype=np.float32)
    k = np.zeros((1, 1, 3, 2), dtype=np.float32)
    q[..., 2, 0] = 1.0  # row 2 (the last: sees all keys) scores key 0 at 85 and itself at 0
    k[..., 0, 0] = 85.0 * np.sqrt(2.0)  # the 1/sqrt(E) scale undone
    v = np.full((1, 1, 3, 2), 100.0, dtype=np.float32)
    out = F.scaled_dot_product_attention(*(ml.Tensor(a) for a in (q, k, v)), is_causal=True).numpy()
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, _reference_attention(q.astype(np.float64), k, v, causal=True), rtol=1e-5)


@pytest.mark.parametrize("copy_k", [True, False], ids=["row-major scaled k^T", "view k^T, scaled q"])
@pytest.mark.parametrize("layout", ["contiguous", "heads of a fused qkv"])
def test_attention_layouts_give_torch_values_and_gradients(copy_k, layout, monkeypatch):
    """Both ways of laying out k^T (small and large products), and inputs that are heads cut out
    of one qkv array (outputs and gradients written heads-last): values and gradients as torch's."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(fast, "NT_COPY_MAX", 10 ** 9 if copy_k else 0)
    rng = np.random.default_rng(4)
    B, H, T, D = 2, 3, 6, 4
    qkv = ml.Tensor(rng.standard_normal((B, T, 3 * H * D)), requires_grad=True)
    if layout == "contiguous":
        q, k, v = (ml.Tensor(rng.standard_normal((B, H, T, D)), requires_grad=True) for _ in range(3))
        leaves = (q, k, v)
    else:
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in qkv.split(H * D, dim=2))
        leaves = (qkv,)
    g = rng.standard_normal((B, H, T, D))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    out.backward(g)
    tleaves = [torch.tensor(t.data, requires_grad=True) for t in leaves]
    if layout == "contiguous":
        tq, tk, tv = tleaves
    else:
        tq, tk, tv = (t.view(B, T, H, D).transpose(1, 2) for t in tleaves[0].split(H * D, dim=2))
    tout = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
    tout.backward(torch.tensor(g))
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    for t, tt in zip(leaves, tleaves):
        np.testing.assert_allclose(t.grad, tt.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_causal_attention_rows_are_bitwise_independent_of_later_positions():
    """Each row's shift is its own diagonal score, so changing a later position changes
    no earlier output in any bit (a matrix-wide shift would, by rounding)."""
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((2, 3, 8, 4)).astype(np.float32) for _ in range(3))
    before = F.scaled_dot_product_attention(ml.Tensor(q), ml.Tensor(k), ml.Tensor(v), is_causal=True).numpy()
    for a in (q, k, v):
        a[:, :, 5:] += 10 * rng.standard_normal(a[:, :, 5:].shape).astype(np.float32)
    after = F.scaled_dot_product_attention(ml.Tensor(q), ml.Tensor(k), ml.Tensor(v), is_causal=True).numpy()
    assert np.array_equal(before[:, :, :5], after[:, :, :5])
    assert not np.array_equal(before[:, :, 5:], after[:, :, 5:])


def test_attention_fully_masked_row_is_nan_like_torch():
    q = k = v = ml.Tensor(np.ones((1, 3, 2)))
    mask = np.ones((3, 3), dtype=bool)
    mask[1] = False
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).numpy()
    assert np.isnan(out[0, 1]).all() and np.isfinite(out[0, [0, 2]]).all()


# ---------------------------------------------------------------- mm on views
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "heads of a fused qkv", "step-2 slice",
                                    "broadcast batch"])
def test_mm_on_views_equals_matmul_of_copies(layout):
    rng = np.random.default_rng(1)
    base = rng.standard_normal((2, 5, 3, 12))
    if layout == "contiguous":
        a, b = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((2, 3, 4, 6))
    elif layout == "transposed":
        a, b = rng.standard_normal((2, 3, 4, 5)).swapaxes(-1, -2), rng.standard_normal((2, 3, 6, 4)).swapaxes(-1, -2)
    elif layout == "heads of a fused qkv":
        a = base[..., :4].transpose(0, 2, 1, 3)                   # (2, 3, 5, 4), rows 12 apart
        b = base[..., 4:8].transpose(0, 2, 3, 1)                  # (2, 3, 4, 5), transposed and strided
    elif layout == "step-2 slice":
        a, b = rng.standard_normal((2, 3, 5, 8))[..., ::2], rng.standard_normal((2, 3, 4, 6))
    else:
        a, b = np.broadcast_to(rng.standard_normal((1, 3, 5, 4)), (2, 3, 5, 4)), rng.standard_normal((4, 6))
    np.testing.assert_allclose(mm(a, b), np.ascontiguousarray(a) @ np.ascontiguousarray(b), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- slice gradients
def test_split_gradients_go_into_one_buffer():
    rng = np.random.default_rng(2)
    x = ml.Tensor(rng.standard_normal((2, 3, 9)), requires_grad=True)
    q, k, v = x.split(3, dim=2)
    (q * 2 + k * k).sum().backward()                              # v unused: zero gradient there
    expected = np.concatenate([np.full((2, 3, 3), 2.0), 2 * x.data[..., 3:6], np.zeros((2, 3, 3))], axis=2)
    np.testing.assert_allclose(x.grad, expected)


def test_slice_gradient_adds_to_a_dense_one():
    x = ml.Tensor(np.arange(6.0), requires_grad=True)
    y = x * 3                                                     # dense gradient 3 everywhere
    (y.sum() + x[1:3].sum() + x[2:].sum() + x[::2].sum()).backward()
    np.testing.assert_allclose(x.grad, [4, 4, 6, 4, 5, 4])


# ---------------------------------------------------------------- the allocator
def test_importing_minilooped_leaves_malloc_alone():
    """The malloc tuning is process-wide: training and the benchmarks ask for it, an import does not."""
    import subprocess
    import sys

    code = ("import minilooped, minilooped.functional, minilooped.models; "
            "from minilooped import backend; print(backend.allocator_tuned)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_tune_allocator_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("MINILOOPED_TUNE_MALLOC", "0")
    assert backend.tune_allocator() is False
    monkeypatch.delenv("MINILOOPED_TUNE_MALLOC")
    assert isinstance(backend.tune_allocator(), bool)


@pytest.mark.parametrize("L", [1, 5])
def test_attention_queries_after_cached_keys_give_torch_values(L):
    """Generation with a KV cache (models/kv_cache.py): L new queries against S = 7 + L keys,
    one query unmasked (the single-row product, no k^T copy), several with the causal mask
    aligned to the last key (a boolean attn_mask): values and gradients as torch's."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(L)
    B, H, S, D = 2, 3, 7 + L, 4
    q = ml.Tensor(rng.standard_normal((B, H, L, D)), requires_grad=True)
    k, v = (ml.Tensor(rng.standard_normal((B, H, S, D)), requires_grad=True) for _ in range(2))
    mask = None if L == 1 else np.tri(L, S, k=S - L, dtype=bool)  # query i sees keys <= S - L + i
    g = rng.standard_normal((B, H, L, D))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out.backward(g)
    tq, tk, tv = (torch.tensor(t.data, requires_grad=True) for t in (q, k, v))
    tmask = None if mask is None else torch.ones(L, S, dtype=torch.bool).tril(S - L)  # causal_lower_right
    tout = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=tmask)
    tout.backward(torch.tensor(g))
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    for t, tt in zip((q, k, v), (tq, tk, tv)):
        np.testing.assert_allclose(t.grad, tt.grad.numpy(), rtol=1e-10, atol=1e-12)
    if mask is not None:  # the mask is torch's lower-right causal bias
        from torch.nn.attention.bias import causal_lower_right
        ref = causal_lower_right(L, S)._materialize(torch.device("cpu"))
        np.testing.assert_array_equal(tmask.numpy(), ref.numpy())
