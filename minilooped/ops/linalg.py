"""Matrix products: ``@`` (batched, broadcasting) and the fused ``linear`` layer op."""
from __future__ import annotations

from .. import backend
from ..tensor import Fresh, Tensor
from .registry import register
from ._util import check_same, unbroadcast


def mm(a, b, out=None):
    """``a @ b`` on arrays, always through BLAS; ``out``: an array (or view) BLAS can write.

    NumPy hands a stack of matrices to BLAS when each matrix is laid out as BLAS expects:
    one of its two dims with unit stride, the other spanning at least a row (or column).
    Views such as ``k.swapaxes(-1, -2)`` or the heads sliced out of the fused qkv output
    qualify as they are, without a copy. Anything else (a broadcast stride of 0, a
    step-2 slice) makes NumPy take a loop that is 10-20x slower: one copy is far cheaper.
    """
    xp = backend.array_module(a)
    if not _blas_layout(a):
        a = xp.ascontiguousarray(a)
    if not _blas_layout(b):
        b = xp.ascontiguousarray(b)
    return a @ b if out is None else xp.matmul(a, b, out=out)


def _blas_layout(a) -> bool:
    if a.ndim <= 2:
        return True  # NumPy copies a 2-D operand itself when it has to
    (m, n), (sm, sn), size = a.shape[-2:], a.strides[-2:], a.itemsize
    row_major = sn == size and sm % size == 0 and sm >= n * size
    col_major = sm == size and sn % size == 0 and sn >= m * size
    return row_major or col_major


def _matmul_error(a, b):
    return ValueError(
        f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} are not aligned: the last dim of "
        f"the left operand ({a.shape[-1]}) must equal the second-to-last dim of the right "
        f"({b.shape[-2] if b.ndim > 1 else b.shape[0]}); transpose an operand (x.T / "
        "x.transpose(-2, -1)) or fix the layer sizes"
    )


@register("matmul")
def matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b for tensors of 2 or more dims; leading (batch) dims broadcast."""
    if not isinstance(b, Tensor):
        b = Tensor(b)
    check_same(a, b, "matmul")
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(
            f"matmul: both operands need at least 2 dims, got shapes {tuple(a.shape)} and "
            f"{tuple(b.shape)}; reshape a vector v to (1, n) or (n, 1) first"
        )
    if a.shape[-1] != b.shape[-2]:
        raise _matmul_error(a, b)
    try:
        backend.np.broadcast_shapes(tuple(a.shape[:-2]), tuple(b.shape[:-2]))
    except ValueError:
        raise ValueError(
            f"matmul: batch dims of {tuple(a.shape)} and {tuple(b.shape)} cannot be broadcast "
            "together; the dims before the last two must be equal or 1"
        ) from None
    out = mm(a.data, b.data)

    def backward(g):
        if a.requires_grad and b.requires_grad:
            return matmul_backward(g, a.data, b.data)
        # one operand is a constant: skip its product, half the work
        ga = unbroadcast(mm(g, b.data.swapaxes(-1, -2)), a.shape) if a.requires_grad else None
        gb = unbroadcast(mm(a.data.swapaxes(-1, -2), g), b.shape) if b.requires_grad else None
        return ga, gb
    return Tensor._make(out, (a, b), backward, "matmul")


def matmul_backward(g, a, b):
    """Gradients (dL/da, dL/db) of out = a @ b, given g = dL/d(out), all arrays.

    d(AB)/dA = G B^T and d(AB)/dB = A^T G for each matrix of the batch; an operand that
    was broadcast along batch dims gets the sum over them (``unbroadcast``).
    """
    ga = unbroadcast(mm(g, b.swapaxes(-1, -2)), a.shape)
    gb = unbroadcast(mm(a.swapaxes(-1, -2), g), b.shape)
    return ga, gb


@register("linear")
def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + b, with W stored (out, in) as in PyTorch and GPT-2 checkpoints.

    All leading dims are flattened into one, so forward and backward are each a single
    2-D matrix product (one BLAS call) rather than a loop of small ones.
    """
    check_same(x, weight, "linear")
    if weight.ndim != 2:  # else weight.shape[1] fails with a bare "tuple index out of range"
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
    n_in = weight.shape[1]
    if x.shape[-1] != n_in:
        raise ValueError(
            f"linear: input of shape {tuple(x.shape)} has {x.shape[-1]} features but the weight "
            f"of shape {tuple(weight.shape)} expects {n_in} (weight is (out, in))"
        )
    lead = tuple(x.shape[:-1])
    x2 = x.data.reshape(-1, n_in)                      # (N, in)
    out = x2 @ weight.data.T                           # (N, out)
    if bias is not None:
        check_same(x, bias, "linear")
        out += bias.data
    out = out.reshape(lead + (weight.shape[0],))
    parents = (x, weight) if bias is None else (x, weight, bias)

    def backward(g):
        g2 = g.reshape(-1, weight.shape[0])            # (N, out)
        # every gradient is a new array (Fresh: the engine may add into it)
        gx = Fresh((g2 @ weight.data).reshape(x.shape)) if x.requires_grad else None
        gw = Fresh(g2.T @ x2) if weight.requires_grad else None   # (out, in)
        if bias is None:
            return gx, gw
        # the column sums of g2 as a matrix-vector product: BLAS reads g2 once, where
        # g2.sum(axis=0) adds it up row by row
        gb = Fresh(backend.array_module(g2).ones(g2.shape[0], dtype=g2.dtype) @ g2) if bias.requires_grad else None
        return gx, gw, gb
    return Tensor._make(out, parents, backward, "linear")
