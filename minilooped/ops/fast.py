"""The fast paths of the core: the same ops as ``fused`` and ``elementwise``, tuned for speed.

Every op of ``minilooped.ops`` is written first as its plain equations, a forward and a
backward one reads at once; the chapters print those. Some of them then hand the work to a
kernel here, with one line at the top of the op:

    if fast.enabled():
        return fast.gelu(a)

The kernels compute the same values (tests/test_fast_paths.py holds each one to its plain
version, which ``with fast.disabled():`` runs) in fewer passes over memory: blocked loops
that stay in the cache (``backend.for_blocks``), row sums by BLAS, shifts of exp() that
avoid per-row reductions, and memory layouts that save copies. Appendix A1 measures each
of them; this module is where the book shows them.
"""
from __future__ import annotations

import contextlib
import math

from .. import backend
from ..tensor import Fresh, Tensor
from ._util import loss_weights, reduce_losses, unbroadcast
from .linalg import mm

_enabled = [True]


def enabled() -> bool:
    """True unless inside ``disabled()``: the ops then run their plain versions."""
    return _enabled[0]


@contextlib.contextmanager
def disabled():
    """Run the plain version of every op inside the block (for tests and for the book).

    Process-wide, not per thread: meant for a test or a notebook cell, not inside training.
    """
    previous = _enabled[0]
    _enabled[0] = False
    try:
        yield
    finally:
        _enabled[0] = previous


# ---------------------------------------------------------------------- GELU
_GELU_K = math.sqrt(2.0 / math.pi)  # a Python float: keeps float32 arrays float32


def gelu(a: Tensor) -> Tensor:
    """``elementwise.gelu`` on one cache-sized block at a time, in place (backend.for_blocks)."""
    xp = backend.array_module(a.data)
    x = xp.ascontiguousarray(a.data).reshape(-1)
    s = xp.empty_like(x)                               # s = (1 + tanh(...)) / 2, saved for the backward
    out = xp.empty_like(x)

    def forward_block(lo, hi):
        # s = (1 + tanh(k x (1 + c x^2))) / 2 and out = x s, in place on one cache-sized
        # block at a time (see backend.for_blocks): every step after the first reads from cache
        xs, ss = x[lo:hi], s[lo:hi]
        xp.multiply(xs, xs, out=ss)
        ss *= _GELU_K * 0.044715
        ss += _GELU_K
        ss *= xs
        xp.tanh(ss, out=ss)
        ss *= 0.5
        ss += 0.5
        xp.multiply(xs, ss, out=out[lo:hi])
    backend.for_blocks(forward_block, x.size, xp=xp)

    def backward(g):
        g = xp.ascontiguousarray(g).reshape(-1)
        d = xp.empty_like(g)
        y = out.reshape(-1)

        def backward_block(lo, hi):
            # d/dx = s + x s' with s' = 2 s (1 - s) k (1 + 3 c x^2), since 1 - tanh^2 = 4 s (1 - s):
            #      = s (1 + 2 k (1 + 3 c x^2) x (1 - s)),  and x (1 - s) = x - out: one pass, not two
            xs, ss, ds = x[lo:hi], s[lo:hi], d[lo:hi]
            tmp = xs - y[lo:hi]                        # x (1 - s)
            xp.multiply(xs, xs, out=ds)
            ds *= 2 * _GELU_K * 3 * 0.044715
            ds += 2 * _GELU_K                          # 2 k (1 + 3 c x^2)
            ds *= tmp
            ds += 1.0
            ds *= ss
            ds *= g[lo:hi]
        backend.for_blocks(backward_block, g.size, xp=xp)
        return (Fresh(d.reshape(a.shape)),)
    out = out.reshape(a.shape)
    return Tensor._make(out, (a,), backward, "gelu")


# ---------------------------------------------------------------- layer norm
def layer_norm(x, weight, bias, eps):
    """``fused.layer_norm`` over the last dim: the same equations, in fewer passes.

    Three changes make it several times faster than the whole-array version:
    - the row sums go to BLAS: ``x @ ones`` is one matrix-vector product, where NumPy's
      ``x.sum(axis=1)`` loops over the rows one short call at a time; the sum of squares
      is ``einsum('ij,ij->i')``, one pass without the temporary ``x * x``;
    - every step writes into a buffer (``out=``) instead of allocating a new array;
    - the rows go a block at a time, so each step after the first reads from the cache,
      and the blocks run on threads (backend.for_blocks).
    """
    xp = backend.np
    c = x.shape[-1]
    x2 = xp.ascontiguousarray(x.data).reshape(-1, c)    # (N, C)
    n = x2.shape[0]
    xhat = xp.empty_like(x2)                            # saved for backward
    rstd = xp.empty((n, 1), dtype=x2.dtype)
    out = xp.empty_like(x2)
    w = None if weight is None else weight.data
    b = None if bias is None else bias.data
    mean_of = xp.full(c, 1.0 / c, dtype=x2.dtype)       # x @ mean_of = the row means
    rows = max(1, backend.BLOCK // c)

    def forward_block(lo, hi):
        xs, xh, r, o = x2[lo:hi], xhat[lo:hi], rstd[lo:hi], out[lo:hi]
        xp.subtract(xs, (xs @ mean_of)[:, None], out=xh)                 # x - mean
        var = xp.einsum("ij,ij->i", xh, xh) / c                          # biased variance
        xp.divide(1.0, xp.sqrt(var + eps), out=r[:, 0])                  # rstd
        xh *= r                                                          # xhat
        if w is not None:
            xp.multiply(xh, w, out=o)
        else:
            o[...] = xh
        if b is not None:
            o += b
    backend.for_blocks(forward_block, n, rows)
    parents = tuple(t for t in (x, weight, bias) if t is not None)

    def backward(g):
        # layer_norm_backward's equations: dx = rstd * (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat))
        g2 = xp.ascontiguousarray(g).reshape(-1, c)
        gx = xp.empty_like(g2)
        partial = {}

        def backward_block(lo, hi):
            gs, xh, gxs = g2[lo:hi], xhat[lo:hi], gx[lo:hi]
            if w is not None:
                xp.multiply(gs, w, out=gxs)                                  # gxhat
            else:
                gxs[...] = gs
            m1 = gxs @ mean_of                                               # mean(gxhat)
            m2 = xp.einsum("ij,ij->i", gxs, xh) / c                          # mean(gxhat * xhat)
            gxs -= m1[:, None]
            gxs -= xh * m2[:, None]
            gxs *= rstd[lo:hi]
            # dweight = sum over rows of g * xhat, dbias = sum of g: column sums, again by BLAS
            gws = xp.einsum("ij,ij->j", gs, xh) if w is not None else None
            gbs = xp.ones(hi - lo, dtype=gs.dtype) @ gs if b is not None else None
            partial[lo] = (gws, gbs)
        backend.for_blocks(backward_block, n, rows)
        # sum the per-block parameter gradients in a fixed order: results do not depend on threads
        keys = sorted(partial)
        grads = (Fresh(gx.reshape(x.shape)),)               # new arrays: the engine may add into them
        if weight is not None:
            grads += (Fresh(sum(partial[k][0] for k in keys)),)
        if bias is not None:
            grads += (Fresh(sum(partial[k][1] for k in keys)),)
        return grads
    return Tensor._make(out.reshape(x.shape), parents, backward, "layer_norm")


# ------------------------------------------------------------- cross entropy
def cross_entropy(logits: Tensor, valid, safe, reduction: str) -> Tensor:
    """``fused.cross_entropy`` after its checks, in fewer passes over the (N, C) logits;
    ``valid``: the targets that count, ``safe``: the targets with ignored ones set to 0."""
    xp = backend.array_module(logits.data)
    n, c = logits.shape
    # e = exp(x - m) with a shift m that keeps exp() in range. The textbook m is each row's
    # max, but NumPy computes it as N short reductions, and x - m is another pass over the
    # (N, C) logits. Any m gives the same softmax, so m is one number: 0 when the largest
    # logit is far from overflowing exp() (the usual case: e = exp(x), one pass), else the
    # largest logit. A row far below m could lose its sum to underflow; such rows (a
    # logit below about -80 everywhere, far outside what a model produces) are redone with
    # their own max. The row sums come from BLAS (e @ 1); the division by them waits for
    # the backward, where it joins the scaling by the loss's weight in a single pass.
    rows = xp.arange(n)
    x = logits.data
    top = float(x.max()) if x.size else 0.0
    m = 0.0 if top < _EXP_SAFE else top
    with backend.np.errstate(under="ignore", over="ignore", invalid="ignore", divide="ignore"):  # bad rows: redone below
        e = xp.exp(x - m if m else x)                           # (N, C)
        sumexp = e @ xp.ones(c, dtype=e.dtype)                  # (N,)
        log_sumexp = xp.log(sumexp) + m                         # each row's log-sum-exp, unshifted
    bad = ~((sumexp >= _tiny_sum(e.dtype, c)) & xp.isfinite(sumexp))
    if bool(bad.any()):                                         # inf or nan logits land here too
        x_rows = x[bad]
        row_max = x_rows.max(axis=1, keepdims=True)
        with backend.np.errstate(invalid="ignore"):             # inf - inf: nan, as in torch
            e_rows = xp.exp(x_rows - row_max)
        e[bad] = e_rows
        sumexp[bad] = e_rows @ xp.ones(c, dtype=e.dtype)
        log_sumexp[bad] = xp.log(sumexp[bad]) + row_max[:, 0]
    losses = xp.where(valid, log_sumexp - x[rows, safe], 0.0).astype(logits.dtype)   # -log p[target]
    count = int(valid.sum())
    out = reduce_losses(losses, count, reduction, xp)

    def backward(g):
        # d loss_i / d logits_i = (softmax_i - onehot(target_i)) * scale_i, softmax_i = e_i / sumexp_i
        scale = loss_weights(g, valid, count, reduction, e.dtype, xp)   # (N,)
        grad = e * (scale / sumexp)[:, None]                     # a new array: e stays intact
        grad[rows, safe] -= scale
        return (Fresh(grad),)
    return Tensor._make(out, (logits,), backward, "cross_entropy")


_EXP_SAFE = 80.0  # exp(80) = 5.5e34 < float32's max 3.4e38; a row whose sum overflows anyway is redone


# ---------------------------------------------------------- embedding backward
def embedding_backward(g, idx, num_embeddings):
    """``fused.embedding_backward`` (the sums of ``add.at``) in one of two faster ways.

    ``add.at`` says it most plainly but adds one row at a time. For a small vocabulary, a
    matrix product with the one-hot matrix of the ids, onehot (V, N) @ g (N, D); for a
    large one, rounds of plain fancy-indexed adds. ``gw[ids] += g`` is fast but keeps one
    row per repeated id, so each round takes at most one occurrence of every id: round r
    adds the r-th occurrence (in order of position) of each id that occurs more than r
    times. There are as many rounds as the most frequent id has occurrences, and every row
    of ``gw`` receives its terms in the order ``add.at`` adds them, so the sums are the
    same to the bit (appendix A1 times all three).
    """
    xp = backend.array_module(g)
    ids = idx.reshape(-1)
    g2 = g.reshape(-1, g.shape[-1])
    if num_embeddings <= ONE_HOT_MAX_VOCAB:
        onehot = xp.zeros((num_embeddings, ids.size), dtype=g.dtype)
        onehot[ids, xp.arange(ids.size)] = 1.0
        return onehot @ g2
    gw = xp.zeros((num_embeddings, g.shape[-1]), dtype=g.dtype)
    if ids.size:
        order = xp.argsort(ids, kind="stable")          # equal ids side by side, in order of position
        sorted_ids = ids[order]
        first = xp.empty(ids.size, dtype=bool)          # True where a run of equal ids starts
        first[0] = True
        xp.not_equal(sorted_ids[1:], sorted_ids[:-1], out=first[1:])
        run_start = xp.flatnonzero(first)[xp.cumsum(first) - 1]
        occurrence = xp.arange(ids.size) - run_start    # 0 for an id's first occurrence, 1 for its second...
        for r in range(int(occurrence.max()) + 1):
            pick = xp.flatnonzero(occurrence == r)      # no id twice: fancy-indexed += is exact
            gw[sorted_ids[pick]] += g2[order[pick]]
    return gw


ONE_HOT_MAX_VOCAB = 128  # measured: the one-hot product wins up to about 128 ids, the rounds beyond


# ----------------------------------------------------------------- attention
def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, mask, dropout_p: float, scale: float,
                                 diagonal: bool) -> Tensor:
    """``fused.scaled_dot_product_attention`` after its checks: ``mask`` is the additive
    mask or None, ``scale`` a number, ``diagonal`` True for causal attention of a square
    (L, L) without another mask (its rows may take their own diagonal score as the shift).

    The (L, S) score matrices are the big arrays here, so the kernel makes as few passes
    over them as it can (in the forward: mask, shift, exp, and two reductions; in the
    backward: subtract and multiply, besides the matrix products):
    - the scale multiplies q or k, which are smaller than the scores when E < S;
    - the softmax is left unnormalised, e = exp(s - m), and the division by the row sums
      r = e @ 1 is applied to the output, (e v) / r, which has E columns instead of S;
    - the shift m that keeps exp() in range is not each row's maximum (NumPy computes a
      per-row max as many short reductions): in causal attention it is the row's own
      diagonal score, always visible, so each row still depends on its own scores alone
      and r >= 1; otherwise it is the largest score of each (L, S) matrix, one fast
      reduction. Should a row overflow (a score far above the diagonal) or underflow (all
      far below the matrix's max), far outside what attention produces, the exact per-row
      shift is used instead.

    Two choices of memory layout save copies around it:
    - the output and the gradients of q, k and v are written (by the matrix product itself)
      into arrays laid out (..., L, heads, E): the model's next step, moving the heads next
      to each other (``y.transpose(1, 2).view(B, T, C)``), is then a free view instead of a
      copy, and so is the same step in reverse for the gradients;
    - for small matrices, k^T is written row-major (by the pass that scales it), and so is
      v^T, so that no product has a transposed right operand, the form OpenBLAS's kernels
      for small matrices are slowest at (see ``_nt_copy_pays``).
    """
    xp = backend.array_module(q.data)
    L, S = q.shape[-2], k.shape[-2]
    if _nt_copy_pays(L, S, q.shape[-1], xp):
        # small matrices: the scale and the transpose of k in one pass, into the row-major
        # (..., E, S) array that BLAS multiplies fastest; q kt is then the scaled scores
        qs, k_scale = q.data, scale
        kt = xp.multiply(k.data.swapaxes(-1, -2), scale, out=xp.empty(k.shape[:-2] + (k.shape[-1], S), dtype=k.dtype))
    else:  # large ones: BLAS reads the view k^T as it is, and the scale goes on q
        qs, k_scale = q.data * scale, 1.0
        kt = k.data.swapaxes(-1, -2)
    shift = "diagonal" if diagonal else "matrix"
    e, r = _attention_weights(qs, kt, mask, xp, shift)
    inv_r = 1.0 / r                                           # (..., L, 1)
    if dropout_p > 0.0:
        keep = backend.generator(q.device).random(e.shape) >= dropout_p
        drop = keep.astype(q.dtype) * (1.0 / (1.0 - dropout_p))
        ed = e * drop
    else:
        drop, ed = None, e
    out = _heads_last_product(ed, v.data, xp)                 # (..., L, Ev)
    _in_memory_order(xp.multiply, out, inv_r, out=out)        # the softmax's normalisation, late

    def backward(g):
        # With p = e / r: out_i = sum_j e_ij v_j / r_i, so d out_i / d e_ij = (v_j - out_i) / r_i.
        # Writing g' = g / r, the gradient reaching e is  g' v^T - (g' . out)  (a row constant),
        # and through e = exp(s - m) the scores receive  ds = e * (g' v^T - (g' . out)).
        gr = _in_memory_order(xp.multiply, g, inv_r)          # g', (..., L, Ev)
        gv = _heads_last_product(ed.swapaxes(-1, -2), gr, xp) if v.requires_grad else None
        gs = mm(gr, _nn_operand(v.data.swapaxes(-1, -2), gr, xp))   # (..., L, S)
        if drop is not None:
            gs *= drop
        gs -= xp.einsum("...i,...i->...", gr, out)[..., None]  # g' . out, one number per row
        gs *= e
        gq = _heads_last_product(gs, k.data, xp) if q.requires_grad else None
        gk = _heads_last_product(gs.swapaxes(-1, -2), qs, xp) if k.requires_grad else None
        for grad, factor in ((gq, scale), (gk, k_scale)):   # s = (q scale) k^T = q (scale k)^T
            if grad is not None and factor != 1.0:
                _in_memory_order(xp.multiply, grad, factor, out=grad)
        return tuple(None if grad is None else Fresh(unbroadcast(grad, t.shape)) for grad, t in ((gq, q), (gk, k), (gv, v)))
    return Tensor._make(out, (q, k, v), backward, "scaled_dot_product_attention")


def _heads_last_product(a, b, xp):
    """a @ b for (..., H, M, K) @ (..., H, K, N), written into memory laid out (..., M, H, N).

    The result is the usual (..., H, M, N) array, as a view. Attention's caller moves the
    heads next to each other right after, ``y.transpose(1, 2).view(B, T, C)``: with this
    layout that is a view too, where a plain product would need a copy of the whole output.
    """
    lead = backend.np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    if len(lead) < 2 or xp is not backend.np:               # no head axis: the plain product
        return mm(a, b)
    m, n = a.shape[-2], b.shape[-1]
    buf = xp.empty(lead[:-1] + (m, lead[-1], n), dtype=xp.result_type(a, b))
    return mm(a, b, out=buf.swapaxes(-3, -2))                 # (..., H, M, N), a view BLAS can write


def _in_memory_order(ufunc, a, b, out=None):
    """``ufunc(a, b, out=out)``, visiting ``a`` in the order it lies in memory.

    For ``a`` in the layout of ``_heads_last_product`` and ``b`` of one value per row
    (..., H, L, 1), NumPy would loop over a's rows by (H, L), short strided runs; with the two
    axes swapped the same elements are one contiguous pass, twice as fast.
    """
    b_ndim = getattr(b, "ndim", 0)                            # a Python number has none
    swap = (a.ndim >= 4 and b_ndim != 2 and not a.flags.c_contiguous
            and a.swapaxes(-3, -2).flags.c_contiguous)
    if not swap:
        return ufunc(a, b, out=out)
    if b_ndim >= 3:
        b = b.swapaxes(-3, -2)                                # else b broadcasts along the last axis only
    res = ufunc(a.swapaxes(-3, -2), b, out=None if out is None else out.swapaxes(-3, -2))
    return res.swapaxes(-3, -2)


NT_COPY_MAX = 64 ** 3   # M N K of one product: below it, copying b^T to row-major pays (measured)


def _nt_copy_pays(m: int, n: int, k: int, xp) -> bool:
    """True if a row-major copy of the right operand of an (m, k) @ (k, n) product pays.

    OpenBLAS's kernels for small matrices are markedly slower when the right operand is a
    transposed view (q k^T, g v^T) than when it is row-major (appendix A1, section 6); for
    products of at most NT_COPY_MAX multiply-adds per matrix a copy costs less than it
    saves, for larger ones it costs more. For a single row (m = 1: one query, as in
    generation with a KV cache) never: the product reads b once, and so would the copy
    (4x slower measured, one query against 576 cached keys of 12 heads).
    """
    return xp is backend.np and 1 < m and m * n * k <= NT_COPY_MAX


def _nn_operand(bt, a, xp):
    """``bt`` (a transposed view, (..., K, N)) as the right operand of ``a @ bt``: row-major if that pays."""
    if _nt_copy_pays(a.shape[-2], bt.shape[-1], bt.shape[-2], xp) and bt.strides[-1] != bt.itemsize:
        return xp.ascontiguousarray(bt)
    return bt


def _attention_weights(q, kt, mask, xp, shift: str):
    """e = exp(q kt + mask - m) and its row sums r, (..., L, S) and (..., L, 1); the scale is
    already in q or in kt (k^T, a row-major copy or a view).

    ``shift``: m is each row's diagonal score ("diagonal") or the largest score of each
    (L, S) matrix ("matrix"). Rows whose sum overflowed, came so near overflowing that the
    product with v could (``_huge_sum``), or lost precision are recomputed with their own
    maximum (``_exact_rows``), so each row depends on its own scores only.
    """
    s = mm(q, kt)                                             # scores, (..., L, S)
    if mask is not None:
        if backend.np.broadcast_shapes(s.shape, mask.shape) == s.shape:
            s += mask
        else:
            s = s + mask                                      # a mask that broadcasts the batch
    L, S = s.shape[-2:]
    if shift == "diagonal":
        s -= s.diagonal(axis1=-2, axis2=-1)[..., None].copy()
    else:
        mats = s.reshape(-1, L * S)
        mats -= mats.max(axis=1, keepdims=True)
    with backend.np.errstate(over="ignore", under="ignore"):  # such rows are found and redone below
        xp.exp(s, out=s)
    r = xp.einsum("...s->...", s)                             # row sums in one pass, not S short ones
    bad = ~((r >= _tiny_sum(s.dtype, S)) & (r <= _huge_sum(s.dtype)))  # nan compares False: bad too
    if bool(bad.any()):
        _exact_rows(s, r, bad, q, kt, mask, xp)
    return s, r[..., None]


def _exact_rows(e, r, bad, q, kt, mask, xp) -> None:
    """Recompute the rows flagged in ``bad`` with the exact shift, each row's own maximum."""
    idx = xp.nonzero(bad)                                     # (batch indices..., row)
    q_rows = xp.broadcast_to(q, e.shape[:-1] + q.shape[-1:])[idx]          # (n, E)
    kt_rows = xp.broadcast_to(kt, e.shape[:-2] + kt.shape[-2:])[idx[:-1]]  # (n, E, S)
    s = xp.einsum("ne,nes->ns", q_rows, kt_rows)
    if mask is not None:
        s = s + xp.broadcast_to(mask, e.shape)[idx]
    with backend.np.errstate(invalid="ignore"):               # a fully masked row: nan, as in torch
        s -= s.max(axis=-1, keepdims=True)
    xp.exp(s, out=s)
    e[idx] = s
    r[idx] = s.sum(axis=-1)


def _tiny_sum(dtype, n: int) -> float:
    """Below this row sum the matrix-wide shift may have cost precision (see above)."""
    fi = backend.np.finfo(dtype)
    return float(fi.tiny) / float(fi.eps) * n


def _huge_sum(dtype) -> float:
    """Above this row sum of e = exp(s - m) (sqrt of the dtype's max: 1.8e19 in float32) the
    shift m was far below the row's top score, and e @ v, whose terms are as large as e,
    could overflow although the sum did not: the diagonal shift of a row whose later key
    scores 50 above its own (a Parcae run at step 119 overflowed so)."""
    return float(backend.np.finfo(dtype).max) ** 0.5


# -------------------------------------------------------------------- AdamW
def adamw_update(p, g, m, v, vmax, lr, b1, b2, eps, wd, t) -> None:
    """``optim.adamw.adamw_update`` in place, with one temporary, on one cache-sized block
    at a time (on threads: backend.for_blocks) when the parameter is large."""
    bc1, bc2_sqrt = 1 - b1 ** t, math.sqrt(1 - b2 ** t)
    arrays = [p, g, m, v, vmax]
    if not all(a is None or a.flags.c_contiguous for a in arrays):
        _adamw_block(*arrays, lr, b1, b2, eps, wd, bc1, bc2_sqrt)
        return
    flat = [None if a is None else a.reshape(-1) for a in arrays]
    if p.size <= backend.BLOCK:  # most parameters: biases and norms
        _adamw_block(*flat, lr, b1, b2, eps, wd, bc1, bc2_sqrt)
        return
    backend.for_blocks(lambda lo, hi: _adamw_block(*[None if a is None else a[lo:hi] for a in flat],
                                                   lr, b1, b2, eps, wd, bc1, bc2_sqrt),
                       p.size, xp=backend.array_module(p))


def _adamw_block(p, g, m, v, vmax, lr, b1, b2, eps, wd, bc1, bc2_sqrt) -> None:
    xp = backend.array_module(p)
    if wd != 0:
        p *= 1 - lr * wd                     # decoupled weight decay
    tmp = g - m
    tmp *= 1 - b1
    m += tmp                                 # torch's lerp form of b1 m + (1 - b1) g
    v *= b2
    xp.multiply(g, g, out=tmp)
    tmp *= 1 - b2
    v += tmp                                 # b2 v + (1 - b2) g^2
    if vmax is not None:
        xp.maximum(vmax, v, out=vmax)
        v = vmax
    # p - lr / bc1 * m / (sqrt(v) / bc2_sqrt + eps), with bc2_sqrt multiplied through so the
    # division by it is folded into the step size: one pass fewer, the same number
    xp.sqrt(v, out=tmp)
    tmp += eps * bc2_sqrt
    xp.divide(m, tmp, out=tmp)
    tmp *= lr * bc2_sqrt / bc1
    p -= tmp
