"""In-place initialisers (torch.nn.init's names), drawing from the seeded generator."""
from __future__ import annotations

import math

from .. import backend


def normal_(t, mean: float = 0.0, std: float = 1.0):
    g = backend.generator(t.device)
    t.data = (g.standard_normal(t.shape, dtype=backend.float64) * std + mean).astype(t.dtype)
    if t.device == "cuda":
        t.data = backend.to_device(t.data, "cuda")
    return t


def uniform_(t, a: float = 0.0, b: float = 1.0):
    g = backend.generator(t.device)
    t.data = (g.random(t.shape) * (b - a) + a).astype(t.dtype)
    return t


def zeros_(t):
    t.data[...] = 0
    return t


def ones_(t):
    t.data[...] = 1
    return t


def constant_(t, value: float):
    t.data[...] = value
    return t


def kaiming_uniform_linear_(weight, bias=None):
    """nn.Linear's default: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias."""
    bound = 1.0 / math.sqrt(weight.shape[1]) if weight.shape[1] else 0.0
    uniform_(weight, -bound, bound)
    if bias is not None:
        uniform_(bias, -bound, bound)


def eye_(t):
    """Set a 2-D tensor to the identity matrix (in place)."""
    if t.ndim != 2:
        raise ValueError(f"eye_: needs a 2-D tensor, got shape {tuple(t.shape)}")
    xp = backend.array_module(t.data)
    t.data = xp.eye(t.shape[0], t.shape[1], dtype=t.dtype)
    return t


def trunc_normal_(t, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0):
    """Normal samples restricted to [a, b] (absolute bounds, as torch): out-of-range
    draws are drawn again until every entry lies inside."""
    if not a < b:
        raise ValueError(f"trunc_normal_: need a < b, got a={a}, b={b}")
    g = backend.generator("cpu")
    n = 1
    for s in t.shape:
        n *= s
    out = backend.np.empty(n, dtype=backend.float64)
    filled = 0
    while filled < n:
        draw = g.standard_normal(max(2 * (n - filled), 16)) * std + mean
        draw = draw[(draw >= a) & (draw <= b)][: n - filled]
        out[filled:filled + draw.size] = draw
        filled += draw.size
    data = out.reshape(t.shape).astype(t.dtype)
    t.data = backend.to_device(data, t.device)
    return t
