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
