"""Reductions over axes: sum, mean, max, var (with ``keepdim`` as in PyTorch)."""
from __future__ import annotations

from .. import backend
from ..tensor import Tensor
from .registry import register
from ._util import normalize_dims


def _expand(g, shape, axes, keepdim):
    """Put reduced axes back (size 1) and broadcast ``g`` to the input's shape."""
    xp = backend.array_module(g)
    if not keepdim:
        g = xp.expand_dims(g, axes) if axes else g
    return xp.broadcast_to(g, shape)


@register("sum")
def sum(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:  # noqa: A001
    axes = normalize_dims(dim, a.ndim, "sum")
    out = a.data.sum(axis=axes, keepdims=keepdim)

    def backward(g):  # every summed element receives the output's gradient
        return (_expand(g, a.shape, axes, keepdim),)
    return Tensor._make(out, (a,), backward, "sum")


@register("mean")
def mean(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    axes = normalize_dims(dim, a.ndim, "mean")
    n = 1
    for ax in axes:
        n *= a.shape[ax]
    out = a.data.mean(axis=axes, keepdims=keepdim)

    def backward(g):
        return (_expand(g * (1.0 / n), a.shape, axes, keepdim),)
    return Tensor._make(out, (a,), backward, "mean")


@register("max")
def max(a: Tensor, dim=None, keepdim: bool = False) -> Tensor:  # noqa: A001
    """The largest values along ``dim`` (values only, like ``torch.amax``).

    Where several entries tie for the maximum, the gradient is shared equally
    between them (torch.amax's rule).
    """
    axes = normalize_dims(dim, a.ndim, "max")
    if a.data.size == 0:
        raise ValueError("max: the tensor is empty")
    out = a.data.max(axis=axes, keepdims=keepdim)

    def backward(g):
        xp = backend.array_module(a.data)
        full = _expand(out, a.shape, axes, keepdim)
        hit = (a.data == full).astype(a.dtype)
        hit /= hit.sum(axis=axes, keepdims=True)
        return (hit * _expand(g, a.shape, axes, keepdim),)
    return Tensor._make(out, (a,), backward, "max")


@register("var")
def var(a: Tensor, dim=None, keepdim: bool = False, unbiased: bool = True, correction=None) -> Tensor:
    """Variance; ``correction`` (default 1 = unbiased, as ``torch.var``) is subtracted from N."""
    axes = normalize_dims(dim, a.ndim, "var")
    if correction is None:
        correction = 1 if unbiased else 0
    n = 1
    for ax in axes:
        n *= a.shape[ax]
    mu = a.data.mean(axis=axes, keepdims=True)
    centred = a.data - mu
    denom = n - correction if n > correction else 0   # N <= correction: nan, as torch
    out = (centred * centred).sum(axis=axes, keepdims=keepdim) / denom

    # N <= correction (one element, unbiased): the variance is undefined, nan as in torch;
    # 2.0 / 0 in Python would raise ZeroDivisionError in the middle of backward()
    k = 2.0 / denom if denom else float("nan")

    def backward(g):  # d var / dx_i = 2 (x_i - mean) / (N - correction)
        return (_expand(g, a.shape, axes, keepdim) * centred * k,)
    return Tensor._make(out, (a,), backward, "var")
