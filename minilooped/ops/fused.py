"""Fused ops: one forward and one hand-derived backward each (softmax, cross-entropy,
layer and RMS norm, embedding, dropout, attention).

Writing softmax, layer norm or attention as a chain of small ops would work -- autograd
would differentiate it -- but every intermediate would be stored and every step would
be a separate pass over memory. Fusing them keeps only what the backward needs and
turns the backward into a few array expressions.

What is written here are the equations. Where a faster kernel computes the same values
(cross-entropy, layer norm, embedding backward, attention), one line at the top of the op
hands the work to it (``if fast.enabled(): ...``); the kernels live in ``fast.py``, and
tests/test_fast_paths.py holds each one to the version here.
"""
from __future__ import annotations

from .. import backend
from ..tensor import Fresh, Tensor
from . import fast
from .registry import register
from ._util import check_same, loss_weights, normalize_dim, reduce_losses, unbroadcast
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
    if fast.enabled():                                          # same values, fewer passes: fast.py
        return fast.cross_entropy(logits, valid, safe, reduction)
    rows = xp.arange(n)
    logp = _log_softmax(logits.data, 1)                         # (N, C) log probabilities
    losses = xp.where(valid, -logp[rows, safe], 0.0).astype(logits.dtype)   # -log p[target]
    count = int(valid.sum())
    out = reduce_losses(losses, count, reduction, xp)

    def backward(g):
        # d loss_i / d logits_i = (softmax_i - onehot(target_i)) * scale_i
        scale = loss_weights(g, valid, count, reduction, logp.dtype, xp)   # (N,)
        grad = xp.exp(logp) * scale[:, None]
        grad[rows, safe] -= scale
        return (Fresh(grad),)
    return Tensor._make(out, (logits,), backward, "cross_entropy")


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
    if fast.enabled() and len(axes) == 1 and xp is backend.np:  # same values, fewer passes: fast.py
        return fast.layer_norm(x, weight, bias, eps)
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
    axes, _ = _norm_axes(x, normalized_shape, "rms_norm")
    xp = _xp(x)
    if eps is None:
        eps = float(backend.np.finfo(x.dtype).eps)
    if weight is not None:
        check_same(x, weight, "rms_norm")
    rstd = 1.0 / xp.sqrt((x.data * x.data).mean(axis=axes, keepdims=True) + eps)
    xhat = x.data * rstd
    out = xhat * weight.data if weight is not None else xhat
    parents = (x,) if weight is None else (x, weight)

    def backward(g):
        gx, gw = rms_norm_backward(g, xhat, rstd, None if weight is None else weight.data, axes)
        return (gx,) if weight is None else (gx, gw)
    return Tensor._make(out, parents, backward, "rms_norm")


def rms_norm_backward(g, xhat, rstd, weight, axes):
    """Gradients (dx, dweight) of y = xhat * weight, xhat = x * rstd, rstd = 1 / sqrt(mean(x^2) + eps).

    g and xhat have x's shape, rstd has size 1 along ``axes`` (the normalised dims), weight
    is None or of the normalised shape. With gxhat = g * weight:

        dx      = rstd * (gxhat - xhat * mean(gxhat * xhat))   the mean over axes
        dweight = sum(g * xhat)                                  the sum over the other dims

    layer_norm_backward without the term of the mean, which RMSNorm does not subtract.
    """
    gxhat = g * weight if weight is not None else g
    gx = (gxhat - xhat * (gxhat * xhat).mean(axis=axes, keepdims=True)) * rstd
    lead = tuple(i for i in range(g.ndim) if i not in axes)
    return gx, (g * xhat).sum(axis=lead)


def parameter_free_rms_norm_backward(g, xhat, rstd, axes):
    """dL/dx of the parameter-free RMSNorm n(x) = x * rstd of the Fully Looped Transformer
    (chapter 7): rms_norm_backward without a weight. g and xhat have x's shape, rstd size 1
    along ``axes``. Moving x along itself only rescales it, which n(x) does not see, so the
    gradient has no component along xhat (x . dx = 0 up to eps) and a residual stream twice
    as large receives half the gradient."""
    return rms_norm_backward(g, xhat, rstd, None, axes)[0]


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
    """
    if fast.enabled():                                  # the same sums, faster: fast.py
        return fast.embedding_backward(g, idx, num_embeddings)
    xp = backend.array_module(g)
    gw = xp.zeros((num_embeddings, g.shape[-1]), dtype=g.dtype)
    xp.add.at(gw, idx.reshape(-1), g.reshape(-1, g.shape[-1]))
    return gw


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
    ``scale`` defaults to 1 / sqrt(E).
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
    if fast.enabled():                                        # same values, fewer passes: fast.py
        diagonal = is_causal and attn_mask is None and L == S
        return fast.scaled_dot_product_attention(q, k, v, mask, dropout_p, scale, diagonal)
    s = mm(q.data, k.data.swapaxes(-1, -2)) * scale           # scores, (..., L, S)
    if mask is not None:
        s = s + mask
    p = _softmax(s, -1)                                       # attention weights, rows sum to 1
    if dropout_p > 0.0:
        keep = backend.generator(q.device).random(p.shape) >= dropout_p
        drop = keep.astype(q.dtype) * (1.0 / (1.0 - dropout_p))
        pd = p * drop
    else:
        drop, pd = None, p
    out = mm(pd, v.data)                                      # (..., L, Ev)

    def backward(g):
        gv = mm(pd.swapaxes(-1, -2), g)                       # out = pd v:  dv = pd^T g
        gp = mm(g, v.data.swapaxes(-1, -2))                   #              dpd = g v^T
        if drop is not None:
            gp *= drop
        gs = softmax_backward(gp, p, -1) * scale              # through the softmax and the scale
        gq = mm(gs, k.data)                                   # s = q k^T scale: dq = ds k
        gk = mm(gs.swapaxes(-1, -2), q.data)                  #                  dk = ds^T q
        return _unb(gq, q.shape), _unb(gk, k.shape), _unb(gv, v.shape)
    return Tensor._make(out, (q, k, v), backward, "scaled_dot_product_attention")


_MASKS: dict = {}


def _causal_mask(xp, L: int, S: int, dtype):
    """(L, S) additive mask, 0 on and below the diagonal and -inf above; built once per shape."""
    key = (xp.__name__, L, S, str(dtype))
    if key not in _MASKS:
        _MASKS[key] = xp.where(xp.triu(xp.ones((L, S), dtype=bool), k=1), -xp.inf, 0.0).astype(dtype)
    return _MASKS[key]


def _unb(g, shape):
    return None if g is None else unbroadcast(g, shape)
