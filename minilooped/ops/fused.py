"""Fused ops: one forward and one hand-derived backward each (softmax, cross-entropy,
layer and RMS norm, embedding, dropout, attention).

Writing softmax, layer norm or attention as a chain of small ops would work -- autograd
would differentiate it -- but every intermediate would be stored and every step would
be a separate pass over memory. Fusing them keeps only what the backward needs and
turns the backward into a few array expressions.
"""
from __future__ import annotations

from .. import backend
from ..tensor import Fresh, Tensor
from .registry import register
from ._util import check_same, normalize_dim, unbroadcast
from .linalg import mm


def _xp(t):
    return backend.array_module(t.data if isinstance(t, Tensor) else t)


# ------------------------------------------------------------------ softmax
def _softmax(x, axis):
    xp = backend.array_module(x)
    # subtracting the max changes nothing mathematically but keeps exp() from overflowing
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


@register("softmax")
def softmax(a: Tensor, dim: int = -1) -> Tensor:
    """softmax(x)_i = exp(x_i) / sum_j exp(x_j), along ``dim``."""
    d = normalize_dim(dim, a.ndim, "softmax")
    y = _softmax(a.data, d)

    def backward(g):
        return (softmax_backward(g, y, d),)
    return Tensor._make(y, (a,), backward, "softmax")


def softmax_backward(g, y, axis):
    """dL/dx for y = softmax(x) along ``axis``, from the output y and g = dL/dy.

    The Jacobian is J_ij = y_i (delta_ij - y_j); its vector-Jacobian product never needs J:

        dx = y * (g - sum_j g_j y_j)          the sum along ``axis``, kept for broadcasting
    """
    return y * (g - (g * y).sum(axis=axis, keepdims=True))


def _log_softmax(x, axis):
    xp = backend.array_module(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


@register("log_softmax")
def log_softmax(a: Tensor, dim: int = -1) -> Tensor:
    """log softmax(x)_i = x_i - log sum_j exp(x_j), computed without overflow."""
    d = normalize_dim(dim, a.ndim, "log_softmax")
    xp = _xp(a)
    y = _log_softmax(a.data, d)

    def backward(g):  # dx = g - softmax(x) * sum(g)
        return (g - xp.exp(y) * g.sum(axis=d, keepdims=True),)
    return Tensor._make(y, (a,), backward, "log_softmax")


# ------------------------------------------------------------ cross entropy
@register("cross_entropy")
def cross_entropy(logits: Tensor, targets, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """-log softmax(logits)[target], averaged over the targets that are not ``ignore_index``.

    logits (N, C), targets (N,) integer class ids. Fused: the gradient is simply
    (softmax(logits) - onehot(target)) / n_valid.
    """
    if isinstance(targets, Tensor):
        targets = targets.data
    xp = _xp(logits)
    targets = xp.asarray(targets)
    if logits.ndim != 2 or targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"cross_entropy: expected logits (N, C) and targets (N,), got logits {tuple(logits.shape)} "
            f"and targets {tuple(targets.shape)}; for a language model flatten them with "
            "logits.view(-1, logits.size(-1)) and targets.view(-1)"
        )
    if targets.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integer class ids, got dtype {targets.dtype}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    n, c = logits.shape
    valid = targets != ignore_index
    safe = xp.where(valid, targets, 0)
    if targets.size and (int(safe.max()) >= c or int(safe.min()) < 0):
        bad = int(safe.max()) if int(safe.max()) >= c else int(safe.min())
        raise IndexError(
            f"cross_entropy: target id {bad} is out of range for {c} classes; targets must be in "
            f"[0, {c}) or equal ignore_index={ignore_index} (check the tokenizer's vocab_size)"
        )
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
    if reduction == "mean":
        # torch gives nan when every target is ignored; so do we
        out = (losses.sum() / count if count else xp.asarray(float("nan"))).astype(logits.dtype)
    elif reduction == "sum":
        out = losses.sum()
    else:
        out = losses

    def backward(g):
        # d loss_i / d logits_i = (softmax_i - onehot(target_i)) * scale_i, softmax_i = e_i / sumexp_i
        if reduction == "none":
            scale = g * valid
        else:
            scale = (g / count if reduction == "mean" else g) * valid
        scale = xp.asarray(scale, dtype=e.dtype)
        grad = e * (scale / sumexp)[:, None]                     # a new array: e stays intact
        grad[rows, safe] -= scale
        return (Fresh(grad),)
    return Tensor._make(out, (logits,), backward, "cross_entropy")


_EXP_SAFE = 80.0  # exp(80) = 5.5e34 < float32's max 3.4e38; a row whose sum overflows anyway is redone


# ------------------------------------------------------------- normalisation
def _norm_axes(x: Tensor, normalized_shape, op):
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    normalized_shape = tuple(normalized_shape)
    k = len(normalized_shape)
    if tuple(x.shape[x.ndim - k:]) != normalized_shape:
        raise ValueError(
            f"{op}: normalized_shape {normalized_shape} does not match the last dims of the input "
            f"of shape {tuple(x.shape)}"
        )
    return tuple(range(x.ndim - k, x.ndim)), normalized_shape


@register("layer_norm")
def layer_norm(x: Tensor, normalized_shape, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last dims (biased var)."""
    axes, nshape = _norm_axes(x, normalized_shape, "layer_norm")
    xp = _xp(x)
    for p in (weight, bias):
        if p is not None:
            check_same(x, p, "layer_norm")
    if len(axes) == 1 and xp is backend.np:
        return _layer_norm_rows(x, weight, bias, eps)
    mu = x.data.mean(axis=axes, keepdims=True)
    xc = x.data - mu
    var = (xc * xc).mean(axis=axes, keepdims=True)
    rstd = 1.0 / xp.sqrt(var + eps)
    xhat = xc * rstd                                    # normalised input, saved for backward
    out = xhat * weight.data if weight is not None else xhat.copy()
    if bias is not None:
        out += bias.data
    parents = tuple(t for t in (x, weight, bias) if t is not None)

    def backward(g):
        gx, gw, gb = layer_norm_backward(g, xhat, rstd, None if weight is None else weight.data, axes)
        return (gx,) + ((gw,) if weight is not None else ()) + ((gb,) if bias is not None else ())
    return Tensor._make(out, parents, backward, "layer_norm")


def _layer_norm_rows(x, weight, bias, eps):
    """layer_norm over the last dim: the same equations as above, in fewer passes.

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


def layer_norm_backward(g, xhat, rstd, weight, axes):
    """Gradients (dx, dweight, dbias) of y = xhat * weight + bias, xhat = (x - mean) * rstd.

    g and xhat have x's shape, rstd = 1 / sqrt(var + eps) has size 1 along ``axes`` (the
    normalised dims), weight is None or of the normalised shape. With gxhat = g * weight:

        dx      = rstd * (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat))   means over axes
        dweight = sum(g * xhat),  dbias = sum(g)                             sums over the other dims

    The two means are what the mean and the variance pass back: moving one x_i moves
    the mean and the variance, hence every xhat_j of its row.
    """
    gxhat = g * weight if weight is not None else g
    gx = gxhat - gxhat.mean(axis=axes, keepdims=True)
    gx -= xhat * (gxhat * xhat).mean(axis=axes, keepdims=True)
    gx *= rstd
    lead = tuple(i for i in range(g.ndim) if i not in axes)
    return gx, (g * xhat).sum(axis=lead), g.sum(axis=lead)


@register("rms_norm")
def rms_norm(x: Tensor, normalized_shape, weight: Tensor | None = None, eps: float | None = None) -> Tensor:
    """y = x / sqrt(mean(x^2) + eps) * weight; eps defaults to the dtype's machine epsilon (torch)."""
    axes, nshape = _norm_axes(x, normalized_shape, "rms_norm")
    xp = _xp(x)
    if eps is None:
        eps = float(backend.np.finfo(x.dtype).eps)
    if weight is not None:
        check_same(x, weight, "rms_norm")
    rstd = 1.0 / xp.sqrt((x.data * x.data).mean(axis=axes, keepdims=True) + eps)
    xhat = x.data * rstd
    out = xhat * weight.data if weight is not None else xhat
    lead = tuple(range(x.ndim - len(nshape)))
    parents = (x,) if weight is None else (x, weight)

    def backward(g):
        gxhat = g * weight.data if weight is not None else g
        # dx = rstd * (gxhat - xhat * mean(gxhat * xhat))
        gx = None
        if x.requires_grad:
            gx = (gxhat - xhat * (gxhat * xhat).mean(axis=axes, keepdims=True)) * rstd
        if weight is None:
            return (gx,)
        return gx, ((g * xhat).sum(axis=lead) if weight.requires_grad else None)
    return Tensor._make(out, parents, backward, "rms_norm")


# ----------------------------------------------------------------- embedding
@register("embedding")
def embedding(idx, weight: Tensor) -> Tensor:
    """Rows of ``weight`` picked by integer ids: out[..., :] = weight[idx[...], :].

    Backward scatters: each row of the gradient is added to the row of its id, and an id
    that occurs twice receives both (hence add.at, not assignment).
    """
    if isinstance(idx, Tensor):
        idx = idx.data
    xp = _xp(weight)
    idx = xp.asarray(idx)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be integers, got dtype {idx.dtype}")
    v = weight.shape[0]
    if idx.size and (int(idx.max()) >= v or int(idx.min()) < 0):
        bad = int(idx.max()) if int(idx.max()) >= v else int(idx.min())
        raise IndexError(
            f"embedding: id {bad} is out of range for a table of {v} rows; ids must be in [0, {v}) "
            "(is the model's vocab_size smaller than the tokenizer's?)"
        )
    out = weight.data[idx]

    def backward(g):
        return (Fresh(embedding_backward(g, idx, v)),)
    return Tensor._make(out, (weight,), backward, "embedding")


def embedding_backward(g, idx, num_embeddings):
    """dL/dweight for out = weight[idx]: g (*idx.shape, D) scattered into (num_embeddings, D).

    Row r of the result is the sum of g[pos] over every position pos with idx[pos] == r
    (zero for ids that do not occur); ``add.at`` accumulates repeated ids, where
    ``gw[idx] += g`` would keep only one of them.

    ``add.at`` says it most plainly but adds one row at a time. Two faster ways compute the
    same sums (appendix A1 times all three): for a small vocabulary, a matrix product with
    the one-hot matrix of the ids, onehot (V, N) @ g (N, D); for a large one, rounds of
    plain fancy-indexed adds. ``gw[ids] += g`` is fast but keeps one row per repeated id,
    so each round takes at most one occurrence of every id: round r adds the r-th
    occurrence (in order of position) of each id that occurs more than r times. There are
    as many rounds as the most frequent id has occurrences, and every row of ``gw`` receives
    its terms in the order ``add.at`` adds them, so the sums are the same to the bit.
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


# ------------------------------------------------------------------- dropout
@register("dropout")
def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    xp = _xp(x)
    if p == 1.0:
        mask = xp.zeros(x.shape, dtype=x.dtype)
    else:
        keep = backend.generator(x.device).random(x.shape) >= p
        mask = keep.astype(x.dtype) * (1.0 / (1.0 - p))
    out = x.data * mask

    def backward(g):
        return (g * mask,)
    return Tensor._make(out, (x,), backward, "dropout")


# ----------------------------------------------------------------- attention
@register("scaled_dot_product_attention")
def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask=None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None) -> Tensor:
    """softmax(q k^T * scale + mask) v, fused, with PyTorch's argument names.

    q (..., L, E), k (..., S, E), v (..., S, Ev). ``is_causal`` lets position i attend to
    positions <= i only. ``attn_mask``: boolean (True = may attend) or additive float.

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
    for t in (k, v):
        check_same(q, t, "scaled_dot_product_attention")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"scaled_dot_product_attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} "
            "do not fit: q and k need the same last dim, k and v the same sequence length"
        )
    xp = _xp(q)
    L, S = q.shape[-2], k.shape[-2]
    scale = float(1.0 / float(q.shape[-1]) ** 0.5 if scale is None else scale)
    mask = None
    if is_causal:
        mask = _causal_mask(xp, L, S, q.dtype)               # -inf above the diagonal: the future
    if attn_mask is not None:
        m = attn_mask.data if isinstance(attn_mask, Tensor) else xp.asarray(attn_mask)
        m = xp.where(m, 0.0, -xp.inf).astype(q.dtype) if m.dtype == bool else m.astype(q.dtype)
        mask = m if mask is None else mask + m
    if _nt_copy_pays(L, S, q.shape[-1], xp):
        # small matrices: the scale and the transpose of k in one pass, into the row-major
        # (..., E, S) array that BLAS multiplies fastest; q kt is then the scaled scores
        qs, k_scale = q.data, scale
        kt = xp.multiply(k.data.swapaxes(-1, -2), scale, out=xp.empty(k.shape[:-2] + (k.shape[-1], S), dtype=k.dtype))
    else:  # large ones: BLAS reads the view k^T as it is, and the scale goes on q
        qs, k_scale = q.data * scale, 1.0
        kt = k.data.swapaxes(-1, -2)
    shift = "diagonal" if is_causal and attn_mask is None and L == S else "matrix"
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
        return tuple(None if grad is None else Fresh(_unb(grad, t.shape)) for grad, t in ((gq, q), (gk, k), (gv, v)))
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
    saves, for larger ones it costs more.
    """
    return xp is backend.np and m * n * k <= NT_COPY_MAX


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


_MASKS: dict = {}


def _causal_mask(xp, L: int, S: int, dtype):
    """(L, S) additive mask, 0 on and below the diagonal and -inf above; built once per shape."""
    key = (xp.__name__, L, S, str(dtype))
    if key not in _MASKS:
        _MASKS[key] = xp.where(xp.triu(xp.ones((L, S), dtype=bool), k=1), -xp.inf, 0.0).astype(dtype)
    return _MASKS[key]


def _unb(g, shape):
    return None if g is None else unbroadcast(g, shape)
