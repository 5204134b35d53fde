"""Elementwise ops: arithmetic with broadcasting and the pointwise functions.

Each op computes its output, then defines ``backward(g)``, the local chain rule:
given dL/d(out) it returns dL/d(input) for every input.
"""
from __future__ import annotations

import math

from .. import backend
from ..tensor import Tensor
from . import fast
from .registry import register
from ._util import broadcast_shape, operand, operands, unbroadcast


def _xp(t: Tensor):
    return backend.array_module(t.data)


# ---------------------------------------------------------------- arithmetic
@register("add")
def add(a: Tensor, b) -> Tensor:
    a, b = operands(a, b, "add")
    broadcast_shape(a, b, "add")
    out = a.data + b.data

    def backward(g):  # d(a+b)/da = 1, d(a+b)/db = 1
        return unbroadcast(g, a.shape), unbroadcast(g, b.shape)
    return Tensor._make(out, (a, b), backward, "add")


@register("sub")
def sub(a: Tensor, b) -> Tensor:
    a, b = operands(a, b, "sub")
    broadcast_shape(a, b, "sub")
    out = a.data - b.data

    def backward(g):
        return unbroadcast(g, a.shape), unbroadcast(-g, b.shape)
    return Tensor._make(out, (a, b), backward, "sub")


@register("mul")
def mul(a: Tensor, b) -> Tensor:
    a, b = operands(a, b, "mul")
    broadcast_shape(a, b, "mul")
    out = a.data * b.data

    def backward(g):  # d(ab)/da = b, d(ab)/db = a
        ga = unbroadcast(g * b.data, a.shape) if a.requires_grad else None
        gb = unbroadcast(g * a.data, b.shape) if b.requires_grad else None
        return ga, gb
    return Tensor._make(out, (a, b), backward, "mul")


@register("div")
def div(a: Tensor, b) -> Tensor:
    a, b = operands(a, b, "div")
    broadcast_shape(a, b, "div")
    out = a.data / b.data

    def backward(g):  # d(a/b)/da = 1/b, d(a/b)/db = -a/b^2
        ga = unbroadcast(g / b.data, a.shape) if a.requires_grad else None
        gb = unbroadcast(-g * out / b.data, b.shape) if b.requires_grad else None
        return ga, gb
    return Tensor._make(out, (a, b), backward, "div")


@register("pow")
def pow(a: Tensor, b) -> Tensor:  # noqa: A001  (the name of the op)
    if isinstance(b, (int, float)) and not isinstance(b, bool):
        p = float(b)
        out = a.data ** p

        def backward(g):  # d(a^p)/da = p a^(p-1)
            if p == 0.0:  # a^0 = 1 is constant; 0 * 0^-1 would give nan at a = 0 (torch: 0)
                return (g * 0.0,)
            return (g * (p * a.data ** (p - 1.0)),)
        return Tensor._make(out, (a,), backward, "pow")
    a, b = operands(a, b, "pow")
    broadcast_shape(a, b, "pow")
    out = a.data ** b.data

    def backward_t(g):  # d(a^b)/da = b a^(b-1), d(a^b)/db = a^b log a
        xp = _xp(a)
        ga = gb = None
        if a.requires_grad:  # where b = 0, a^b = 1 is constant: 0, not 0 * 0^-1 = nan (torch)
            ga = unbroadcast(xp.where(b.data == 0, 0.0, g * b.data * a.data ** (b.data - 1)), a.shape)
        if b.requires_grad:  # at a = 0 (b >= 0) a^b log a -> 0, not 0 * log 0 = nan (torch)
            gb = unbroadcast(g * out * xp.log(xp.where(a.data == 0, 1.0, a.data)), b.shape)
        return ga, gb
    return Tensor._make(out, (a, b), backward_t, "pow")


@register("neg")
def neg(a: Tensor) -> Tensor:
    def backward(g):
        return (-g,)
    return Tensor._make(-a.data, (a,), backward, "neg")


# --------------------------------------------------------- pointwise functions
@register("exp")
def exp(a: Tensor) -> Tensor:
    out = _xp(a).exp(a.data)

    def backward(g):  # d e^a / da = e^a
        return (g * out,)
    return Tensor._make(out, (a,), backward, "exp")


@register("log")
def log(a: Tensor) -> Tensor:
    out = _xp(a).log(a.data)

    def backward(g):
        return (g / a.data,)
    return Tensor._make(out, (a,), backward, "log")


@register("tanh")
def tanh(a: Tensor) -> Tensor:
    out = _xp(a).tanh(a.data)

    def backward(g):
        return (tanh_backward(g, out),)
    return Tensor._make(out, (a,), backward, "tanh")


def tanh_backward(g, out):
    """dL/da for out = tanh(a), from the output alone: g * (1 - out^2), since tanh' = 1 - tanh^2."""
    return g * (1.0 - out * out)


@register("sqrt")
def sqrt(a: Tensor) -> Tensor:
    out = _xp(a).sqrt(a.data)

    def backward(g):
        return (g * 0.5 / out,)
    return Tensor._make(out, (a,), backward, "sqrt")


@register("relu")
def relu(a: Tensor) -> Tensor:
    mask = a.data > 0
    out = a.data * mask

    def backward(g):
        return (g * mask,)
    return Tensor._make(out, (a,), backward, "relu")


@register("sigmoid")
def sigmoid(a: Tensor) -> Tensor:
    xp = _xp(a)
    # 1/(1+e^-a) overflows for very negative a; tanh form is stable everywhere
    out = 0.5 * (xp.tanh(0.5 * a.data) + 1.0)

    def backward(g):
        return (g * out * (1.0 - out),)
    return Tensor._make(out, (a,), backward, "sigmoid")


@register("abs")
def abs(a: Tensor) -> Tensor:  # noqa: A001
    xp = _xp(a)
    sign = xp.sign(a.data)

    def backward(g):
        return (g * sign,)
    return Tensor._make(xp.abs(a.data), (a,), backward, "abs")


@register("softplus")
def softplus(a: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """log(1 + e^(beta a)) / beta, linear above ``threshold`` as in torch."""
    xp = _xp(a)
    z = a.data * beta
    out = xp.where(z > threshold, a.data, xp.logaddexp(0.0, z) / beta).astype(a.dtype)

    def backward(g):  # derivative is sigmoid(beta a)
        s = 0.5 * (xp.tanh(0.5 * z) + 1.0)
        return (g * xp.where(z > threshold, 1.0, s).astype(a.dtype),)
    return Tensor._make(out, (a,), backward, "softplus")


_GELU_K = math.sqrt(2.0 / math.pi)  # a Python float: keeps float32 arrays float32


@register("gelu")
def gelu(a: Tensor, approximate: str = "tanh") -> Tensor:
    """GELU in GPT-2's tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    if approximate != "tanh":
        raise NotImplementedError(
            f"gelu(approximate={approximate!r}): the core implements GPT-2's tanh form only; "
            "use approximate='tanh' (torch: F.gelu(x, approximate='tanh'))"
        )
    if fast.enabled():                                 # same values, in place, block by block: fast.py
        return fast.gelu(a)
    xp = _xp(a)
    x = a.data
    t = xp.tanh(_GELU_K * (x + 0.044715 * x * x * x))  # tanh(u), u = k (x + c x^3)
    out = 0.5 * x * (1.0 + t)

    def backward(g):
        return (gelu_backward(g, x),)
    return Tensor._make(out, (a,), backward, "gelu")


def gelu_backward(g, x):
    """dL/dx for out = gelu(x) in its tanh form, g = dL/d(out): g times GELU's derivative at x.

    With u = k (x + c x^3) and t = tanh(u): d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx,
    du/dx = k (1 + 3 c x^2). (The product rule on 0.5 x (1 + t), the chain rule through tanh.)
    """
    t = backend.array_module(x).tanh(_GELU_K * (x + 0.044715 * x * x * x))
    du = _GELU_K * (1.0 + 3 * 0.044715 * x * x)
    return g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)


@register("cast")
def cast(a: Tensor, dtype) -> Tensor:
    """A copy in another floating dtype; the gradient is cast back."""
    src = a.dtype
    out = a.data.astype(dtype)

    def backward(g):
        return (g.astype(src),)
    return Tensor._make(out, (a,), backward, "cast")


# -------------------------------------------------------------- selection
def _condition(cond):
    if isinstance(cond, Tensor):
        cond = cond.data
    return cond


@register("where")
def where(cond, a, b) -> Tensor:
    """``a`` where ``cond`` is true, else ``b``; the gradient follows the same choice."""
    if not isinstance(a, Tensor):
        if not isinstance(b, Tensor):
            raise TypeError("where(cond, a, b): at least one of a and b must be a Tensor")
        a = operand(a, b, "where")
    a, b = operands(a, b, "where")
    c = _condition(cond)
    xp = _xp(a)
    try:
        out = xp.where(c, a.data, b.data)
    except ValueError:
        raise ValueError(
            f"where: condition {tuple(c.shape)}, a {tuple(a.shape)} and b {tuple(b.shape)} cannot be "
            "broadcast together: aligned from the right, each size must be equal or 1; reshape or "
            "unsqueeze one of them"
        ) from None
    zero = xp.zeros((), dtype=out.dtype)

    def backward(g):
        ga = unbroadcast(xp.where(c, g, zero), a.shape) if a.requires_grad else None
        gb = unbroadcast(xp.where(c, zero, g), b.shape) if b.requires_grad else None
        return ga, gb
    return Tensor._make(out, (a, b), backward, "where")


@register("masked_fill")
def masked_fill(a: Tensor, mask, value: float) -> Tensor:
    """``value`` where ``mask`` is true, ``a`` elsewhere (mask broadcasts to a's shape)."""
    m = _condition(mask)
    xp = _xp(a)
    try:
        out = xp.where(m, xp.asarray(value, dtype=a.dtype), a.data)
    except ValueError:
        raise ValueError(
            f"masked_fill: mask of shape {tuple(m.shape)} does not broadcast to the tensor's "
            f"shape {tuple(a.shape)}"
        ) from None
    if out.shape != a.shape:
        raise ValueError(f"masked_fill: mask of shape {tuple(m.shape)} would enlarge the tensor of shape {tuple(a.shape)}")
    zero = xp.zeros((), dtype=a.dtype)

    def backward(g):
        return (xp.where(m, zero, g),)
    return Tensor._make(out, (a,), backward, "masked_fill")
