"""Gradient-norm clipping: scale all gradients so their joint L2 norm is at most max_norm."""
from __future__ import annotations

import math

from .. import backend
from ..tensor import Tensor


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> float:
    """As torch.nn.utils.clip_grad_norm_: returns the norm before clipping."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    if norm_type == math.inf:
        total = max(float(abs(g).max()) for g in grads)
    elif norm_type == 2.0:
        # the sum of squares of each gradient is its dot product with itself: one BLAS call,
        # one pass over memory, where abs, ** 2 and sum would make three and two temporaries
        total = math.sqrt(sum(float(_dot(g)) for g in grads))
    else:
        total = sum(float((backend.array_module(g).abs(g) ** norm_type).sum()) for g in grads) ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total gradient norm is {total}; the loss diverged")
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads:
            g *= coef
    return total


def _dot(g):
    flat = g.reshape(-1)
    return flat @ flat
