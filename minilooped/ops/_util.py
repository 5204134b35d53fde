"""Helpers shared by the ops: operand checks with clear errors, and broadcasting."""
from __future__ import annotations

from .. import backend
from ..tensor import Tensor


def unbroadcast(g, shape):
    """Sum gradient ``g`` back down to ``shape`` (the inverse of broadcasting).

    Broadcasting copies an operand along new leading axes and along its axes of size 1;
    each copy received gradient, so the operand's gradient is their sum.
    """
    shape = tuple(shape)
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    if extra > 0:
        g = g.sum(axis=tuple(range(extra)))
    ones = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    if ones:
        g = g.sum(axis=ones, keepdims=True)
    return g


def operand(x, like: Tensor, op: str) -> Tensor:
    """Make the other operand of a binary op a Tensor compatible with ``like``."""
    if isinstance(x, Tensor):
        check_same(like, x, op)
        return x
    if isinstance(x, bool) or isinstance(x, (int, float)):
        xp = backend.array_module(like.data)
        dtype = like.dtype if like.dtype.kind == "f" else None
        if dtype is None and isinstance(x, float):
            dtype = backend.float32  # int tensor * 0.5 is float32, as in torch (not NumPy's float64)
        return Tensor(xp.asarray(x, dtype=dtype))
    t = Tensor(x)
    if t.dtype.kind in "iub" and like.dtype.kind == "f":
        t = Tensor(t.data.astype(like.dtype))
    check_same(like, t, op)
    return t


def operands(a: Tensor, b, op: str):
    """Both operands of a binary op as Tensors that combine without a silent upcast.

    NumPy promotes int64 with float32 to float64, which would quietly turn a float32 model
    float64 (twice the memory, half the speed). torch keeps the floating operand's dtype,
    and so do we: an integer or boolean operand (a mask, ids) is cast to it. It has no
    gradient, so nothing is lost.
    """
    b = operand(b, a, op)
    if a.dtype.kind in "iub" and b.dtype.kind == "f":
        a = Tensor(a.data.astype(b.dtype))
    elif b.dtype.kind in "iub" and a.dtype.kind == "f":
        b = Tensor(b.data.astype(a.dtype))
    return a, b


def check_same(a: Tensor, b: Tensor, op: str) -> None:
    """Operands must live on one device and, if both are floating, share a dtype."""
    da, db = a.device, b.device
    if da != db:
        raise RuntimeError(
            f"{op}: operands are on different devices ({da} and {db}); move one with "
            f".to('{da}') or .to('{db}') first"
        )
    if a.dtype != b.dtype and a.dtype.kind == "f" and b.dtype.kind == "f":
        raise TypeError(
            f"{op}: mixed dtypes {a.dtype} and {b.dtype}; cast one of them, e.g. "
            f"x.to('{a.dtype}') (or .float() / .double()), so both are the same"
        )


def broadcast_shape(a, b, op: str):
    try:
        return backend.np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
    except ValueError:
        raise ValueError(
            f"{op}: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be broadcast together: "
            "aligned from the right, each pair of sizes must be equal or one of them 1; "
            "reshape or unsqueeze an operand"
        ) from None


def normalize_dim(dim: int, ndim: int, op: str) -> int:
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise IndexError(f"{op}: dim {dim} is out of range for a tensor with {ndim} dimensions; "
                         f"use a dim in [{-max(ndim, 1)}, {max(ndim, 1) - 1}] (negative dims count from the end)")
    return dim % max(ndim, 1)


def normalize_dims(dim, ndim: int, op: str):
    """None -> all axes; int or sequence -> a sorted tuple of non-negative axes."""
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, int):
        dim = (dim,)
    return tuple(sorted(normalize_dim(d, ndim, op) for d in dim))


def reduce_losses(losses, count: int, reduction: str, xp):
    """The per-row losses of a loss op, reduced as ``reduction`` says ('mean' over the
    ``count`` rows that count, 'sum', or 'none')."""
    if reduction == "mean":
        # torch gives nan when every target is ignored; so do we
        return (losses.sum() / count if count else xp.asarray(float("nan"))).astype(losses.dtype)
    if reduction == "sum":
        return losses.sum()
    return losses


def loss_weights(g, valid, count: int, reduction: str, dtype, xp):
    """d(reduced loss)/d(loss_i), times the incoming gradient g: one weight per row, 0 where
    the row is ignored (``valid`` False)."""
    if reduction == "none":
        scale = g * valid
    else:
        scale = (g / count if reduction == "mean" else g) * valid
    return xp.asarray(scale, dtype=dtype)
